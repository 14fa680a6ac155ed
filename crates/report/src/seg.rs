//! The DICOM Segmentation of a first read: Segmentation IOD (PS3.3 A.51), one BINARY segment per
//! model output channel.
//!
//! Modules written (PS3.3 A.51.3):
//! - Patient, General Study (C.7.1.1, C.7.2.1): copied from the source ([`crate::SourceStudy`]);
//! - General Series (C.7.3.1) and Segmentation Series (C.8.20.1): Modality `SEG`, its own series
//!   ([`crate::ResultUids::seg_series`], Series Number [`SEG_SERIES_NUMBER`]);
//! - Frame of Reference (C.7.4.1): the source's Frame of Reference UID;
//! - General Equipment, Enhanced General Equipment (C.7.5.1, C.7.5.2): Manufacturer `firstread`;
//! - General Image, Image Pixel, Segmentation Image (C.7.6.1, C.7.6.3, C.8.20.2): Image Type
//!   `DERIVED\PRIMARY`, Content Label `FIRSTREAD`, 1-bit MONOCHROME2 frames, Segmentation Type
//!   `BINARY`, Segments Overlap `YES` (the opacity channel lies inside the lung channels), one
//!   Segment Sequence item per channel with the manifest's label, algorithm type and name, SNOMED CT
//!   category/type codes, Anatomic Region Sequence when the manifest gives one, and Recommended
//!   Display CIELab Value ([`srgb_to_dicom_lab`], C.10.7.1.1);
//! - Multi-frame Functional Groups (C.7.6.16): Shared: Plane Orientation (the source images'
//!   Image Orientation (Patient)) and Pixel Measures (Pixel Spacing, Slice Thickness and Spacing
//!   Between Slices = the slice spacing); Per-frame: Derivation Image (Source Image Sequence to the
//!   CT instance of that slice), Frame Content (Dimension Index Values), Plane Position (that
//!   slice's Image Position (Patient)), Segment Identification;
//! - Multi-frame Dimension (C.7.6.17): two dimensions, Referenced Segment Number then Image
//!   Position (Patient); the index values are (segment number, canonical slice index + 1), i.e.
//!   the slice's rank along the slice normal from inferior to superior;
//! - Common Instance Reference (C.12.2): Referenced Series Sequence listing every source instance;
//! - SOP Common (C.12.1): SOP Class 1.2.840.10008.5.1.4.1.1.66.4, Specific Character Set
//!   ISO_IR 192.
//!
//! Segments: one per channel of the segmentation, in manifest channel order (segment number =
//! channel + 1). The TorchScript's channels come first; a pipeline step may add channels (the
//! pleural effusions, `stage = "pleural-cavity"` in the manifest): a manifest output beyond the
//! channels given was not produced and gets no segment, so 3 or 5 channels both give a valid SEG.
//!
//! Frames: for segment 1..=n (manifest channel order), for each canonical slice from inferior to
//! superior where that channel's mask is non-empty, one frame. A channel empty everywhere (no
//! opacity, no effusion) keeps its segment with one all-zero frame on the middle slice, so every
//! segment is referenced by a frame, segment numbers stay the channels + 1 that the volumetric SR
//! references, and the object always has frames. Frames are written in the SOURCE pixel grid (Rows x Columns of the source
//! images, each canonical `(row, col)` mapped through [`firstread_volume::Volume::source_pixel`]),
//! and the bits of all frames are packed as one stream, least significant bit first (PS3.5 8.1.1,
//! 8.2), padded with zero to an even length. Transfer syntax Explicit VR Little Endian.
//!
//! Every date and time comes from [`crate::ResultInput::content_date`]/`content_time`, so the same
//! input gives byte-identical files.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileDicomObject, InMemDicomObject};

use crate::dataset::{new_instance, put_str, put_strs, put_u16, seq, truncate, SeriesHeader};
use crate::{ReportError, ResultInput};

/// Segmentation Storage SOP Class UID (PS3.4 B.5).
pub const SEG_SOP_CLASS_UID: &str = "1.2.840.10008.5.1.4.1.1.66.4";
/// Explicit VR Little Endian transfer syntax UID (PS3.5 A.2).
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
/// Series Number (0020,0011) of the SEG series.
pub const SEG_SERIES_NUMBER: i32 = 9002;
/// Content Label (0070,0080) of every firstread object.
pub const CONTENT_LABEL: &str = "FIRSTREAD";
/// Manufacturer (0008,0070) of every firstread object.
pub const MANUFACTURER: &str = "firstread";

/// Builds the Segmentation of `input` (see the module doc for its content).
///
/// Shape: frames of `Rows x Columns` = the source images, one per (segment, slice with that
/// segment); `Number of Frames` = their count.
///
/// # Errors
/// [`ReportError::Write`] when the masks, the volume, its source slices and the manifest's
/// outputs disagree in size, or the file meta group cannot be built.
pub fn build_seg(input: &ResultInput) -> Result<FileDicomObject<InMemDicomObject>, ReportError> {
    let err = |message: String| ReportError::Write { what: "SEG", message };
    let v = input.volume;
    check_shapes(input).map_err(err)?;
    let [slices, rows, cols] = v.shape;
    let plane = rows * cols;

    // Frames: (segment number, canonical slice), segment-major, inferior to superior.
    let mut frames: Vec<(u16, usize)> = Vec::new();
    for (ch, mask) in input.segmentation.channels.iter().enumerate() {
        let number = segment_number(ch).map_err(err)?;
        let before = frames.len();
        for k in 0..slices {
            if mask[k * plane..(k + 1) * plane].iter().any(|&m| m != 0) {
                frames.push((number, k));
            }
        }
        if frames.len() == before {
            frames.push((number, slices / 2));
        }
    }
    let pixel_data = pack_frames(input, &frames);

    let m = input.manifest;
    let (date, time) = (input.content_date.as_str(), input.content_time.as_str());

    // Patient, General Study, SOP Common, General Series, Segmentation Series.
    // a vocabulary package's series start with its name (a study may hold several packages' SEGs);
    // the COVID-19 package's description is kept, so its objects stay byte-identical
    let description = match input.findings {
        Some(_) => format!("firstread lung segmentation ({} {})", m.name, m.version),
        None => format!("{} {} segmentation", m.name, m.version),
    };
    let mut obj = new_instance(
        input,
        &SeriesHeader {
            sop_class_uid: SEG_SOP_CLASS_UID,
            sop_instance_uid: &input.uids.seg_instance,
            modality: "SEG",
            series_instance_uid: &input.uids.seg_series,
            series_number: SEG_SERIES_NUMBER,
            series_description: &description,
        },
    );
    put_str(&mut obj, tags::BODY_PART_EXAMINED, VR::CS, "CHEST");

    // Frame of Reference.
    // The analysed series' own, else the one read with the source study attributes.
    let frame_of_reference = v.frame_of_reference_uid.as_ref().or(input.source.frame_of_reference_uid.as_ref());
    if let Some(uid) = frame_of_reference {
        put_str(&mut obj, tags::FRAME_OF_REFERENCE_UID, VR::UI, uid);
        obj.put(DataElement::new(tags::POSITION_REFERENCE_INDICATOR, VR::LO, PrimitiveValue::Empty));
    }

    // General Equipment, Enhanced General Equipment.
    put_equipment(&mut obj, input);

    // General Image, Segmentation Image, Image Pixel.
    put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");
    put_str(&mut obj, tags::CONTENT_DATE, VR::DA, date);
    put_str(&mut obj, tags::CONTENT_TIME, VR::TM, time);
    put_strs(&mut obj, tags::IMAGE_TYPE, VR::CS, &["DERIVED", "PRIMARY"]);
    put_str(&mut obj, tags::CONTENT_LABEL, VR::CS, CONTENT_LABEL);
    put_str(&mut obj, tags::CONTENT_DESCRIPTION, VR::LO, &truncate(&format!("{} {}", m.name, m.version), 64));
    // Family name only; the trailing delimiter keeps it from reading as the retired PN form.
    put_str(&mut obj, tags::CONTENT_CREATOR_NAME, VR::PN, "firstread^");
    put_str(&mut obj, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
    put_str(&mut obj, tags::SEGMENTS_OVERLAP, VR::CS, "YES");
    put_str(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    put_u16(&mut obj, tags::SAMPLES_PER_PIXEL, &[1]);
    put_str(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put_u16(&mut obj, tags::ROWS, &[to_u16(rows).map_err(err)?]);
    put_u16(&mut obj, tags::COLUMNS, &[to_u16(cols).map_err(err)?]);
    put_u16(&mut obj, tags::BITS_ALLOCATED, &[1]);
    put_u16(&mut obj, tags::BITS_STORED, &[1]);
    put_u16(&mut obj, tags::HIGH_BIT, &[0]);
    put_u16(&mut obj, tags::PIXEL_REPRESENTATION, &[0]);
    put_str(&mut obj, tags::NUMBER_OF_FRAMES, VR::IS, &frames.len().to_string());
    obj.put(seq(tags::SEGMENT_SEQUENCE, segment_items(input).map_err(err)?));

    // Multi-frame Dimension.
    let organization = input.uids.other("seg-dimension-organization");
    let mut org_item = InMemDicomObject::new_empty();
    put_str(&mut org_item, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &organization);
    obj.put(seq(tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![org_item]));
    put_str(&mut obj, tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D");
    let dimension = |pointer: Tag, group: Tag, label: &str| {
        let mut item = InMemDicomObject::new_empty();
        item.put(DataElement::new(tags::DIMENSION_INDEX_POINTER, VR::AT, PrimitiveValue::Tags(vec![pointer].into())));
        item.put(DataElement::new(tags::FUNCTIONAL_GROUP_POINTER, VR::AT, PrimitiveValue::Tags(vec![group].into())));
        put_str(&mut item, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &organization);
        put_str(&mut item, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
        item
    };
    obj.put(seq(
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            dimension(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                "ReferencedSegmentNumber",
            ),
            dimension(tags::IMAGE_POSITION_PATIENT, tags::PLANE_POSITION_SEQUENCE, "ImagePositionPatient"),
        ],
    ));

    // Multi-frame Functional Groups.
    obj.put(seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared_groups(input)]));
    let per_frame = frames.iter().map(|&(number, k)| frame_groups(input, number, k)).collect();
    obj.put(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame));

    // Common Instance Reference.
    obj.put(referenced_series(input));

    obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(pixel_data.into())));

    obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|e| err(e.to_string()))
}

/// Converts an sRGB colour (0-255 per channel, D65) to the scaled CIELab of Recommended Display
/// CIELab Value (0062,000D), PS3.3 C.10.7.1.1: CIELab in the ICC Profile Connection Space (D50,
/// reached with the Bradford-adapted sRGB matrix of the ICC sRGB profile), `L*` 0..100 scaled to
/// 0..65535, `a*` and `b*` -128..127 scaled to 0..65535, rounded (white is
/// `[65535, 32896, 32896]`: the ICC 16-bit PCSLab encoding, `(a* + 128) x 257`).
pub fn srgb_to_dicom_lab(rgb: [u8; 3]) -> [u16; 3] {
    let lin = rgb.map(|c| {
        let c = f64::from(c) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    });
    // sRGB (linear) -> XYZ relative to D50 (ICC sRGB profile, Bradford adaptation).
    const M: [[f64; 3]; 3] = [
        [0.436_074_7, 0.385_064_9, 0.143_080_4],
        [0.222_504_5, 0.716_878_6, 0.060_616_9],
        [0.013_932_2, 0.097_104_5, 0.714_173_3],
    ];
    // Normalised by the matrix's own white (its row sums, the D50 white point), so that sRGB
    // white and greys land exactly on a* = b* = 0.
    let xyz: [f64; 3] = std::array::from_fn(|i| {
        (M[i][0] * lin[0] + M[i][1] * lin[1] + M[i][2] * lin[2]) / (M[i][0] + M[i][1] + M[i][2])
    });
    let f = |t: f64| {
        const D: f64 = 6.0 / 29.0;
        if t > D * D * D {
            t.cbrt()
        } else {
            t / (3.0 * D * D) + 4.0 / 29.0
        }
    };
    let (fx, fy, fz) = (f(xyz[0]), f(xyz[1]), f(xyz[2]));
    let l = (116.0 * fy - 16.0).clamp(0.0, 100.0);
    let a = (500.0 * (fx - fy)).clamp(-128.0, 127.0);
    let b = (200.0 * (fy - fz)).clamp(-128.0, 127.0);
    let scale = |v: f64| (v * 65535.0).round().clamp(0.0, 65535.0) as u16;
    [scale(l / 100.0), scale((a + 128.0) / 255.0), scale((b + 128.0) / 255.0)]
}

/// Formats a number as a Decimal String (VR DS) value of at most 16 characters, with as many
/// decimals as fit (trailing zeros and `-0` removed).
pub fn format_ds(value: f64) -> String {
    if !value.is_finite() {
        return "0".into();
    }
    for precision in (0..=10).rev() {
        let mut s = format!("{value:.precision$}");
        if s.contains('.') {
            s = s.trim_end_matches('0').trim_end_matches('.').to_owned();
        }
        if s == "-0" {
            s = "0".into();
        }
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{value:.6e}")
}

/// The source images' Image Orientation (Patient) (row cosines, then column cosines): the
/// canonical axes with the volume's flips undone.
pub(crate) fn source_orientation(v: &firstread_volume::Volume) -> ([f64; 3], [f64; 3]) {
    let sign = |flip: bool| if flip { -1.0 } else { 1.0 };
    let row = v.axes[2].map(|x| x * sign(v.flip_cols));
    let col = v.axes[1].map(|x| x * sign(v.flip_rows));
    (row, col)
}

pub(crate) fn check_shapes(input: &ResultInput) -> Result<(), String> {
    let v = input.volume;
    let s = input.segmentation;
    let n: usize = v.shape.iter().product();
    if s.shape != v.shape {
        return Err(format!("masks {:?} and volume {:?} differ in shape", s.shape, v.shape));
    }
    if s.channels.iter().any(|c| c.len() != n) {
        return Err("a mask does not have one value per voxel".into());
    }
    // The TorchScript's channels come first; a pipeline step may add more (e.g. the pleural
    // effusions): outputs beyond the channels given were not produced and get no segment.
    if s.channels.len() > input.manifest.outputs.len() {
        return Err(format!("{} masks for {} manifest outputs", s.channels.len(), input.manifest.outputs.len()));
    }
    if v.slices.len() != v.shape[0] {
        return Err(format!("{} source slices for {} volume slices", v.slices.len(), v.shape[0]));
    }
    if n == 0 {
        return Err("empty volume".into());
    }
    Ok(())
}

fn segment_number(channel: usize) -> Result<u16, String> {
    u16::try_from(channel + 1).map_err(|_| format!("too many segments ({})", channel + 1))
}

fn to_u16(v: usize) -> Result<u16, String> {
    u16::try_from(v).map_err(|_| format!("{v} rows/columns do not fit DICOM US"))
}

/// Packs the frames' bits, LSB first, as one stream (no per-frame padding), even length.
fn pack_frames(input: &ResultInput, frames: &[(u16, usize)]) -> Vec<u8> {
    let v = input.volume;
    let [_, rows, cols] = v.shape;
    let plane = rows * cols;
    let mut bytes = (frames.len() * plane).div_ceil(8);
    bytes += bytes % 2;
    let mut data = vec![0u8; bytes];
    for (f, &(number, k)) in frames.iter().enumerate() {
        let Some(mask) = input.segmentation.channels.get(usize::from(number) - 1) else { continue };
        let slice = &mask[k * plane..(k + 1) * plane];
        for r in 0..rows {
            for c in 0..cols {
                if slice[r * cols + c] != 0 {
                    let (sr, sc) = v.source_pixel(r, c);
                    let bit = f * plane + sr * cols + sc;
                    data[bit / 8] |= 1 << (bit % 8);
                }
            }
        }
    }
    data
}

fn segment_items(input: &ResultInput) -> Result<Vec<InMemDicomObject>, String> {
    let m = input.manifest;
    let mut items = Vec::with_capacity(m.outputs.len());
    for (i, o) in m.outputs.iter().enumerate().take(input.segmentation.channels.len()) {
        let mut item = InMemDicomObject::new_empty();
        put_u16(&mut item, tags::SEGMENT_NUMBER, &[segment_number(i)?]);
        put_str(&mut item, tags::SEGMENT_LABEL, VR::LO, &truncate(&o.segment_label, 64));
        if let Some(d) = &o.description {
            put_str(&mut item, tags::SEGMENT_DESCRIPTION, VR::ST, &truncate(d, 1024));
        }
        put_str(&mut item, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, &o.algorithm_type);
        if o.algorithm_type != "MANUAL" {
            put_str(&mut item, tags::SEGMENT_ALGORITHM_NAME, VR::LO, &truncate(&m.name, 64));
        }
        item.put(seq(
            tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
            vec![code_item(&o.category_scheme, &o.category_value, &o.category_meaning)],
        ));
        item.put(seq(
            tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
            vec![code_item(&o.type_scheme, &o.type_value, &o.type_meaning)],
        ));
        if let (Some(s), Some(v), Some(mn)) =
            (&o.anatomic_region_scheme, &o.anatomic_region_value, &o.anatomic_region_meaning)
        {
            item.put(seq(tags::ANATOMIC_REGION_SEQUENCE, vec![code_item(s, v, mn)]));
        }
        put_u16(&mut item, tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE, &srgb_to_dicom_lab(o.recommended_display_rgb));
        items.push(item);
    }
    Ok(items)
}

fn shared_groups(input: &ResultInput) -> InMemDicomObject {
    let v = input.volume;
    let (row, col) = source_orientation(v);
    let mut orientation = InMemDicomObject::new_empty();
    let iop: Vec<String> = row.iter().chain(col.iter()).map(|&x| format_ds(x)).collect();
    put_strs(&mut orientation, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &iop);
    let mut measures = InMemDicomObject::new_empty();
    put_strs(&mut measures, tags::PIXEL_SPACING, VR::DS, &[format_ds(v.spacing_mm[1]), format_ds(v.spacing_mm[2])]);
    put_str(&mut measures, tags::SLICE_THICKNESS, VR::DS, &format_ds(v.spacing_mm[0]));
    put_str(&mut measures, tags::SPACING_BETWEEN_SLICES, VR::DS, &format_ds(v.spacing_mm[0]));
    let mut shared = InMemDicomObject::new_empty();
    shared.put(seq(tags::PLANE_ORIENTATION_SEQUENCE, vec![orientation]));
    shared.put(seq(tags::PIXEL_MEASURES_SEQUENCE, vec![measures]));
    shared
}

/// A Source Image Sequence item for `slice`: its SOP Class and Instance, purpose "Source image for
/// image processing operation" (DCM 121322).
pub(crate) fn source_image_item(slice: &firstread_volume::SourceSlice) -> InMemDicomObject {
    let mut source = InMemDicomObject::new_empty();
    put_str(&mut source, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &slice.sop_class_uid);
    put_str(&mut source, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &slice.sop_instance_uid);
    source.put(seq(
        tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
        vec![code_item("DCM", "121322", "Source image for image processing operation")],
    ));
    source
}

fn frame_groups(input: &ResultInput, number: u16, k: usize) -> InMemDicomObject {
    let slice = &input.volume.slices[k];
    let mut frame = InMemDicomObject::new_empty();

    let source = source_image_item(slice);
    let mut derivation = InMemDicomObject::new_empty();
    derivation.put(seq(tags::DERIVATION_CODE_SEQUENCE, vec![code_item("DCM", "113076", "Segmentation")]));
    derivation.put(seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source]));
    frame.put(seq(tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]));

    let mut content = InMemDicomObject::new_empty();
    let index = u32::try_from(k + 1).unwrap_or(u32::MAX);
    content.put(DataElement::new(
        tags::DIMENSION_INDEX_VALUES,
        VR::UL,
        PrimitiveValue::U32(vec![u32::from(number), index].into()),
    ));
    frame.put(seq(tags::FRAME_CONTENT_SEQUENCE, vec![content]));

    let mut position = InMemDicomObject::new_empty();
    let ipp: Vec<String> = slice.position_mm.iter().map(|&x| format_ds(x)).collect();
    put_strs(&mut position, tags::IMAGE_POSITION_PATIENT, VR::DS, &ipp);
    frame.put(seq(tags::PLANE_POSITION_SEQUENCE, vec![position]));

    let mut segment = InMemDicomObject::new_empty();
    put_u16(&mut segment, tags::REFERENCED_SEGMENT_NUMBER, &[number]);
    frame.put(seq(tags::SEGMENT_IDENTIFICATION_SEQUENCE, vec![segment]));
    frame
}

/// Referenced Series Sequence (0008,1115) of the Common Instance Reference module: the analysed
/// series with every one of its instances.
fn referenced_series(input: &ResultInput) -> Element {
    let v = input.volume;
    let instances = v
        .slices
        .iter()
        .map(|s| {
            let mut item = InMemDicomObject::new_empty();
            put_str(&mut item, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &s.sop_class_uid);
            put_str(&mut item, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &s.sop_instance_uid);
            item
        })
        .collect();
    let mut series = InMemDicomObject::new_empty();
    put_str(&mut series, tags::SERIES_INSTANCE_UID, VR::UI, &v.series_instance_uid);
    series.put(seq(tags::REFERENCED_INSTANCE_SEQUENCE, instances));
    seq(tags::REFERENCED_SERIES_SEQUENCE, vec![series])
}

/// General Equipment (C.7.5.1) and Enhanced General Equipment (C.7.5.2) attributes.
pub(crate) fn put_equipment(obj: &mut InMemDicomObject, input: &ResultInput) {
    put_str(obj, tags::MANUFACTURER, VR::LO, MANUFACTURER);
    put_str(obj, tags::MANUFACTURER_MODEL_NAME, VR::LO, "firstread");
    // A software-only device has no serial number; the attribute is Type 1 in C.7.5.2.
    put_str(obj, tags::DEVICE_SERIAL_NUMBER, VR::LO, &format!("firstread-{}", env!("CARGO_PKG_VERSION")));
    put_strs(obj, tags::SOFTWARE_VERSIONS, VR::LO, &software_versions(input));
}

/// Software Versions (0018,1020): the node's version, then the model's name and version.
pub(crate) fn software_versions(input: &ResultInput) -> [String; 2] {
    [
        format!("firstread {}", env!("CARGO_PKG_VERSION")),
        truncate(&format!("{} {}", input.manifest.name, input.manifest.version), 64),
    ]
}

/// An in-memory data element.
pub(crate) type Element = dicom_object::mem::InMemElement;

/// A code sequence item (PS3.3 Table 8.8-1): Code Value (or Long Code Value above 16
/// characters), Coding Scheme Designator, Code Meaning.
pub(crate) fn code_item(scheme: &str, value: &str, meaning: &str) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    if value.len() > 16 {
        put_str(&mut item, tags::LONG_CODE_VALUE, VR::UC, value);
    } else {
        put_str(&mut item, tags::CODE_VALUE, VR::SH, value);
    }
    put_str(&mut item, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
    put_str(&mut item, tags::CODE_MEANING, VR::LO, &truncate(meaning, 64));
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cielab_of_white_black_and_red() {
        assert_eq!(srgb_to_dicom_lab([255, 255, 255]), [65535, 32896, 32896]);
        assert_eq!(srgb_to_dicom_lab([0, 0, 0]), [0, 32896, 32896]);
        let [_, a, b] = srgb_to_dicom_lab([128, 128, 128]);
        assert_eq!((a, b), (32896, 32896));
        // sRGB red in D50 CIELab: L* 54.29, a* 80.80, b* 69.89 (ICC sRGB profile).
        let [l, a, b] = srgb_to_dicom_lab([255, 0, 0]);
        let back = |v: u16| f64::from(v) / 65535.0 * 255.0 - 128.0;
        assert!((f64::from(l) / 65535.0 * 100.0 - 54.29).abs() < 0.2);
        assert!((back(a) - 80.80).abs() < 0.5);
        assert!((back(b) - 69.89).abs() < 0.5);
    }

    #[test]
    fn decimal_strings_fit_16_characters() {
        assert_eq!(format_ds(1.0), "1");
        assert_eq!(format_ds(-0.0), "0");
        assert_eq!(format_ds(0.646484375), "0.646484375");
        assert_eq!(format_ds(-165.177734375), "-165.177734375");
        assert!(format_ds(-123456.123456789).len() <= 16);
        assert_eq!(format_ds(-1e-12), "0");
    }
}
