//! Synthetic CT series written with dicom-object: small axial slices whose every attribute a test
//! can change, so each rule of the builder is exercised by a file, not by a mock.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;

pub const STUDY: &str = "1.2.826.0.1.3680043.8.498.1";
pub const FRAME_OF_REFERENCE: &str = "1.2.826.0.1.3680043.8.498.2";
pub const SIZE: usize = 32;
/// Stored value of slice `i` (outside markers): 1024 + 10 i, so HU = 10 i with intercept -1024.
pub fn base_value(i: usize) -> i16 {
    1024 + 10 * i as i16
}

/// One synthetic slice.
pub struct Slice {
    pub obj: InMemDicomObject,
}

impl Slice {
    /// Slice `i` of `series`, at z = 2.5 i mm, 32 x 32 pixels of 0.5 mm, signed 16-bit, HU = 10 i.
    pub fn new(series: &str, i: usize) -> Self {
        let mut s = Slice { obj: InMemDicomObject::new_empty() };
        s.text(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE)
            .text(tags::SOP_INSTANCE_UID, VR::UI, &format!("{series}.{}", i + 1))
            .text(tags::STUDY_INSTANCE_UID, VR::UI, STUDY)
            .text(tags::SERIES_INSTANCE_UID, VR::UI, series)
            .text(tags::FRAME_OF_REFERENCE_UID, VR::UI, FRAME_OF_REFERENCE)
            .text(tags::MODALITY, VR::CS, "CT")
            .text(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL")
            .text(tags::SERIES_DESCRIPTION, VR::LO, "synthetic")
            .text(tags::CONVOLUTION_KERNEL, VR::SH, "B30f")
            .text(tags::SLICE_THICKNESS, VR::DS, "2.5")
            .text(tags::INSTANCE_NUMBER, VR::IS, &(i + 1).to_string())
            .text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0")
            .text(tags::PIXEL_SPACING, VR::DS, "0.5\\0.5")
            .text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2")
            .text(tags::RESCALE_SLOPE, VR::DS, "1")
            .text(tags::RESCALE_INTERCEPT, VR::DS, "-1024")
            .position([-8.0, -8.0, 2.5 * i as f64])
            .us(tags::ROWS, SIZE as u16)
            .us(tags::COLUMNS, SIZE as u16)
            .us(tags::SAMPLES_PER_PIXEL, 1)
            .us(tags::BITS_ALLOCATED, 16)
            .us(tags::BITS_STORED, 16)
            .us(tags::HIGH_BIT, 15)
            .us(tags::PIXEL_REPRESENTATION, 1)
            .pixels(vec![base_value(i) as u16; SIZE * SIZE]);
        s
    }

    pub fn text(&mut self, tag: Tag, vr: VR, value: &str) -> &mut Self {
        self.obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
        self
    }

    pub fn us(&mut self, tag: Tag, value: u16) -> &mut Self {
        self.obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
        self
    }

    pub fn element(&mut self, tag: Tag, vr: VR, value: PrimitiveValue) -> &mut Self {
        self.obj.put(DataElement::new(tag, vr, value));
        self
    }

    pub fn remove(&mut self, tag: Tag) -> &mut Self {
        self.obj.remove_element(tag);
        self
    }

    pub fn position(&mut self, p: [f64; 3]) -> &mut Self {
        self.text(tags::IMAGE_POSITION_PATIENT, VR::DS, &format!("{}\\{}\\{}", p[0], p[1], p[2]))
    }

    /// Raw 16-bit words, row-major.
    pub fn pixels(&mut self, words: Vec<u16>) -> &mut Self {
        self.obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(words.into())));
        self
    }

    /// Sets one raw word at (row, col).
    pub fn set_pixel(&mut self, row: usize, col: usize, word: u16) -> &mut Self {
        let mut words: Vec<u16> = match self.obj.get(tags::PIXEL_DATA).map(|e| e.value()) {
            Some(dicom_core::DicomValue::Primitive(PrimitiveValue::U16(v))) => v.to_vec(),
            _ => vec![0; SIZE * SIZE],
        };
        words[row * SIZE + col] = word;
        self.pixels(words)
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        write_object(self.obj.clone(), dir, name, uids::EXPLICIT_VR_LITTLE_ENDIAN)
    }
}

pub fn write_object(obj: InMemDicomObject, dir: &Path, name: &str, transfer_syntax: &str) -> PathBuf {
    let path = dir.join(name);
    let file = obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(transfer_syntax)).expect("file meta");
    file.write_to_file(&path).expect("write file");
    path
}

/// Writes `slices` as `<series-tail>-<n>.dcm` files.
pub fn write_all(dir: &Path, slices: &[Slice]) -> Vec<PathBuf> {
    slices.iter().enumerate().map(|(n, s)| s.write(dir, &format!("{n:03}-{}.dcm", dir_unique(s)))).collect()
}

fn dir_unique(s: &Slice) -> String {
    s.obj.get(tags::SOP_INSTANCE_UID).and_then(|e| e.to_str().ok()).map(|u| u.replace('.', "_")).unwrap_or_default()
}

/// 16 slices of `series`.
pub fn series(series: &str, n: usize) -> Vec<Slice> {
    (0..n).map(|i| Slice::new(series, i)).collect()
}

/// A non-image object (an X-Ray Radiation Dose SR) in `series`.
pub fn dose_report(series: &str, n: usize) -> Slice {
    let mut s = Slice { obj: InMemDicomObject::new_empty() };
    s.text(tags::SOP_CLASS_UID, VR::UI, uids::X_RAY_RADIATION_DOSE_SR_STORAGE)
        .text(tags::SOP_INSTANCE_UID, VR::UI, &format!("{series}.9{n}"))
        .text(tags::STUDY_INSTANCE_UID, VR::UI, STUDY)
        .text(tags::SERIES_INSTANCE_UID, VR::UI, series)
        .text(tags::MODALITY, VR::CS, "SR");
    s
}
