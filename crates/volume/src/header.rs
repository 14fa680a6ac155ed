//! Header of one instance, read up to (not including) Pixel Data (7FE0,0010).
//!
//! Series selection and geometry need only the header, so the pixel data of the study is never
//! loaded for the series that are not chosen. Values are parsed leniently by
//! `firstread_store::attributes` (DS/IS padding, empty values, VR UN re-read by dictionary VR).

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use firstread_store::attributes::{floats, from_dataset, InstanceAttributes};

use crate::error::Refusal;

/// The header attributes of one Part 10 file the builder uses.
#[derive(Debug, Clone)]
pub(crate) struct InstanceHeader {
    /// The file.
    pub path: PathBuf,
    /// Index attributes (SOP Common, General Series, Image Plane, CT Image modules).
    pub attrs: InstanceAttributes,
    /// Gantry/Detector Tilt (0018,1120) in degrees (PS3.3 C.8.2.1 CT Image module).
    pub gantry_tilt_deg: Option<f64>,
}

impl InstanceHeader {
    /// Image Position (Patient) (0020,0032), x, y, z in mm (LPS), when it has three values.
    pub fn position(&self) -> Option<[f64; 3]> {
        let p = self.attrs.image_position_patient.as_deref()?;
        Some([*p.first()?, *p.get(1)?, *p.get(2)?])
    }

    /// Image Orientation (Patient) (0020,0037): row then column direction cosines.
    pub fn orientation(&self) -> Option<[f64; 6]> {
        let o = self.attrs.image_orientation_patient.as_deref()?;
        <[f64; 6]>::try_from(o).ok()
    }

    /// Pixel Spacing (0028,0030): row spacing (between rows), column spacing, mm.
    pub fn pixel_spacing(&self) -> Option<[f64; 2]> {
        let s = self.attrs.pixel_spacing.as_deref()?;
        <[f64; 2]>::try_from(s).ok()
    }

    /// Instance Number (0020,0013) for ordering duplicates; absent sorts last.
    pub fn instance_number_key(&self) -> i64 {
        self.attrs.instance_number.map_or(i64::MAX, i64::from)
    }
}

/// Reads the header of `path`.
///
/// # Errors
/// [`Refusal::Io`] when the file cannot be opened or parsed, or lacks a usable SOP, study or
/// series UID (the stored study only holds parsable instances, so this means the storage changed).
pub(crate) fn read_header(path: &Path) -> Result<InstanceHeader, Refusal> {
    let io = |message: String| Refusal::Io { path: path.to_owned(), message };
    let obj = OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(path).map_err(|e| io(e.to_string()))?;
    let attrs = from_dataset(&obj).map_err(|e| io(e.to_string()))?;
    let gantry_tilt_deg = floats(&obj, tags::GANTRY_DETECTOR_TILT).and_then(|v| v.first().copied());
    Ok(InstanceHeader { path: path.to_owned(), attrs, gantry_tilt_deg })
}
