//! Lenient extraction of the attributes the index needs from a received data set.
//!
//! Peers send DS/IS values with spaces, NUL padding, leading zeros or empty values, and
//! Explicit VR elements written with VR UN (which dicom-rs keeps as raw bytes). Every accessor
//! here trims, treats empty as absent, and re-reads UN values by the tag's dictionary VR
//! (PS3.5 6.2 and 6.2.2), so none of those inputs fails or panics.

use std::borrow::Cow;
use std::path::Path;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::{FileDicomObject, InMemDicomObject, OpenFileOptions};

/// The index attributes of one instance (PS3.3 Patient, General Study, General Series,
/// Image Plane and SOP Common modules). Text values are trimmed; empty values are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceAttributes {
    /// SOP Class UID (0008,0016).
    pub sop_class_uid: String,
    /// SOP Instance UID (0008,0018).
    pub sop_instance_uid: String,
    /// Study Instance UID (0020,000D).
    pub study_instance_uid: String,
    /// Series Instance UID (0020,000E).
    pub series_instance_uid: String,
    /// Transfer Syntax UID (0002,0010) of the stored file.
    pub transfer_syntax_uid: String,
    /// Specific Character Set (0008,0005), values joined with `\`.
    pub specific_character_set: Option<String>,
    /// Patient's Name (0010,0010), decoded with the data set's character set.
    pub patient_name: Option<String>,
    /// Patient ID (0010,0020).
    pub patient_id: Option<String>,
    /// Patient's Birth Date (0010,0030), DA.
    pub patient_birth_date: Option<String>,
    /// Patient's Sex (0010,0040).
    pub patient_sex: Option<String>,
    /// Study Date (0008,0020), DA.
    pub study_date: Option<String>,
    /// Study Time (0008,0030), TM.
    pub study_time: Option<String>,
    /// Accession Number (0008,0050).
    pub accession_number: Option<String>,
    /// Study Description (0008,1030).
    pub study_description: Option<String>,
    /// Study ID (0020,0010).
    pub study_id: Option<String>,
    /// Referring Physician's Name (0008,0090).
    pub referring_physician_name: Option<String>,
    /// Modality (0008,0060).
    pub modality: Option<String>,
    /// Series Number (0020,0011).
    pub series_number: Option<i32>,
    /// Series Description (0008,103E).
    pub series_description: Option<String>,
    /// Body Part Examined (0018,0015).
    pub body_part_examined: Option<String>,
    /// Frame of Reference UID (0020,0052).
    pub frame_of_reference_uid: Option<String>,
    /// Instance Number (0020,0013).
    pub instance_number: Option<i32>,
    /// Image Type (0008,0008), values joined with `\`.
    pub image_type: Option<String>,
    /// Image Position (Patient) (0020,0032): x, y, z in mm.
    pub image_position_patient: Option<Vec<f64>>,
    /// Image Orientation (Patient) (0020,0037): row then column direction cosines.
    pub image_orientation_patient: Option<Vec<f64>>,
    /// Pixel Spacing (0028,0030): row spacing, column spacing in mm.
    pub pixel_spacing: Option<Vec<f64>>,
    /// Slice Thickness (0018,0050) in mm.
    pub slice_thickness: Option<f64>,
    /// Rows (0028,0010).
    pub rows: Option<i32>,
    /// Columns (0028,0011).
    pub columns: Option<i32>,
    /// Number of Frames (0028,0008).
    pub number_of_frames: Option<i32>,
    /// The instance's DICOM JSON metadata without Pixel Data (see [`crate::metadata`]); `None`
    /// when it could not be encoded or was not asked for.
    pub metadata: Option<String>,
    /// Convolution Kernel (0018,1210), values joined with `\`.
    pub convolution_kernel: Option<String>,
    /// Patient Position (0018,5100): the patient's position relative to the imaging equipment
    /// (PS3.3 C.7.3.1.1.2: HFS, FFS head/feet first supine, HFP, FFP prone, HFDR, HFDL, FFDR,
    /// FFDL decubitus right / left side down, ...).
    pub patient_position: Option<String>,
}

/// Why a data set could not be read for indexing.
#[derive(Debug, thiserror::Error)]
pub enum AttributeError {
    /// Not a parsable DICOM data set in the announced transfer syntax.
    #[error("unparsable data set: {0}")]
    Unparsable(String),
    /// A mandatory attribute is missing or empty.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A UID that cannot be used (not digits and dots, or longer than 64 characters).
    #[error("invalid {attribute}")]
    InvalidUid {
        /// Which attribute.
        attribute: &'static str,
    },
}

/// Reads a Part 10 file up to (not including) Pixel Data and extracts its index attributes and
/// its DICOM JSON metadata.
///
/// # Errors
/// [`AttributeError::Unparsable`] when the file does not parse; `Missing`/`InvalidUid` when a
/// SOP, study or series UID is absent or unusable (UIDs become path components).
pub fn read_attributes(path: &Path) -> Result<InstanceAttributes, AttributeError> {
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| AttributeError::Unparsable(e.to_string()))?;
    describe(&obj)
}

/// The index attributes and DICOM JSON metadata of a Part 10 object in memory (read from a file,
/// or built by this node), as [`read_attributes`] gives them for its file.
///
/// # Errors
/// As [`read_attributes`], except parsing.
pub fn describe(obj: &FileDicomObject<InMemDicomObject>) -> Result<InstanceAttributes, AttributeError> {
    let mut attrs = from_dataset(obj)?;
    attrs.transfer_syntax_uid = trim(obj.meta().transfer_syntax()).to_owned();
    match crate::metadata::metadata_json(obj, &attrs) {
        Ok(json) => attrs.metadata = Some(json),
        Err(e) => tracing::warn!(error = %e, "no DICOM JSON metadata for this instance; served from its file"),
    }
    Ok(attrs)
}

/// Extracts index attributes from an in-memory data set (the root data set of an instance).
///
/// # Errors
/// As [`read_attributes`], except parsing.
pub fn from_dataset(obj: &InMemDicomObject) -> Result<InstanceAttributes, AttributeError> {
    let uid = |tag: Tag, attribute: &'static str| -> Result<String, AttributeError> {
        let value = text(obj, tag).ok_or(AttributeError::Missing(attribute))?;
        if is_valid_uid(&value) {
            Ok(value)
        } else {
            Err(AttributeError::InvalidUid { attribute })
        }
    };
    Ok(InstanceAttributes {
        sop_class_uid: uid(tags::SOP_CLASS_UID, "SOP Class UID")?,
        sop_instance_uid: uid(tags::SOP_INSTANCE_UID, "SOP Instance UID")?,
        study_instance_uid: uid(tags::STUDY_INSTANCE_UID, "Study Instance UID")?,
        series_instance_uid: uid(tags::SERIES_INSTANCE_UID, "Series Instance UID")?,
        transfer_syntax_uid: String::new(),
        specific_character_set: text(obj, tags::SPECIFIC_CHARACTER_SET),
        patient_name: text(obj, tags::PATIENT_NAME),
        patient_id: text(obj, tags::PATIENT_ID),
        patient_birth_date: text(obj, tags::PATIENT_BIRTH_DATE),
        patient_sex: text(obj, tags::PATIENT_SEX),
        study_date: text(obj, tags::STUDY_DATE),
        study_time: text(obj, tags::STUDY_TIME),
        accession_number: text(obj, tags::ACCESSION_NUMBER),
        study_description: text(obj, tags::STUDY_DESCRIPTION),
        study_id: text(obj, tags::STUDY_ID),
        referring_physician_name: text(obj, tags::REFERRING_PHYSICIAN_NAME),
        modality: text(obj, tags::MODALITY),
        series_number: int(obj, tags::SERIES_NUMBER),
        series_description: text(obj, tags::SERIES_DESCRIPTION),
        body_part_examined: text(obj, tags::BODY_PART_EXAMINED),
        frame_of_reference_uid: text(obj, tags::FRAME_OF_REFERENCE_UID),
        instance_number: int(obj, tags::INSTANCE_NUMBER),
        image_type: text(obj, tags::IMAGE_TYPE),
        image_position_patient: floats(obj, tags::IMAGE_POSITION_PATIENT).filter(|v| v.len() == 3),
        image_orientation_patient: floats(obj, tags::IMAGE_ORIENTATION_PATIENT).filter(|v| v.len() == 6),
        pixel_spacing: floats(obj, tags::PIXEL_SPACING).filter(|v| v.len() == 2),
        slice_thickness: floats(obj, tags::SLICE_THICKNESS).and_then(|v| v.first().copied()),
        rows: int(obj, tags::ROWS),
        columns: int(obj, tags::COLUMNS),
        number_of_frames: int(obj, tags::NUMBER_OF_FRAMES),
        convolution_kernel: text(obj, tags::CONVOLUTION_KERNEL),
        patient_position: text(obj, tags::PATIENT_POSITION),
        metadata: None,
    })
}

/// A UID usable as a file name: 1-64 characters of digits and dots, no empty component
/// (PS3.5 9.1; leading zeros are tolerated, as real devices send them).
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && uid.split('.').all(|c| !c.is_empty())
}

/// Trims DICOM padding: spaces and NULs on both ends.
pub fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c == ' ' || c == '\0')
}

/// The element's value as text with each value trimmed; multiple values joined with `\`;
/// empty as `None`. UN elements are decoded as text when the tag's dictionary VR is textual.
/// NULs inside a value (never valid in a text VR; PostgreSQL text cannot hold them) are dropped:
/// the stored file keeps the bytes as received.
pub fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let raw = raw_text(obj, tag)?.replace('\0', "");
    // only a text with an escape sequence or one of Latin-5's six letters can need it: the
    // character set is read for those alone
    let charset =
        crate::charset::may_need_decoding(&raw).then(|| raw_text(obj, tags::SPECIFIC_CHARACTER_SET)).flatten();
    let raw = match charset {
        Some(c) => crate::charset::decode(&c, &raw).into_owned(),
        None => raw,
    };
    let joined = raw.split('\\').map(trim).collect::<Vec<_>>().join("\\");
    if joined.chars().all(|c| c == '\\') {
        None
    } else {
        Some(joined)
    }
}

/// The element's values as numbers (DS, IS, FD, FL, US, SS, ...); empty values skipped.
/// `None` when absent or when any non-empty value does not parse.
pub fn floats(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let element = obj.get(tag)?;
    let vr = effective_vr(tag, element.vr());
    match vr {
        VR::DS | VR::IS | VR::LO | VR::SH | VR::CS => parse_numbers(&raw_text(obj, tag)?),
        VR::US | VR::SS | VR::UL | VR::SL | VR::FL | VR::FD if element.vr() == VR::UN => {
            let bytes = element.to_bytes().ok()?;
            binary_numbers(&bytes, vr)
        }
        _ => element.to_multi_float64().ok().filter(|v| !v.is_empty()),
    }
}

/// The first value as an integer (IS, US, ...), tolerating "0012", " 7 ", "7.0".
pub fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i32> {
    let v = *floats(obj, tag)?.first()?;
    (v.is_finite() && v.fract() == 0.0 && v.abs() <= i32::MAX as f64).then_some(v as i32)
}

fn parse_numbers(s: &str) -> Option<Vec<f64>> {
    let mut out = Vec::new();
    for part in s.split('\\') {
        let p = trim(part);
        if p.is_empty() {
            continue;
        }
        let v: f64 = p.parse().ok()?;
        if !v.is_finite() {
            return None;
        }
        out.push(v);
    }
    (!out.is_empty()).then_some(out)
}

fn binary_numbers(bytes: &[u8], vr: VR) -> Option<Vec<f64>> {
    let width = match vr {
        VR::US | VR::SS => 2,
        VR::UL | VR::SL | VR::FL => 4,
        VR::FD => 8,
        _ => return None,
    };
    let out: Vec<f64> = bytes
        .chunks_exact(width)
        .map(|c| match vr {
            VR::US => f64::from(u16::from_le_bytes([c[0], c[1]])),
            VR::SS => f64::from(i16::from_le_bytes([c[0], c[1]])),
            VR::UL => f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            VR::SL => f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            VR::FL => f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            _ => f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

/// The VR to interpret an element by: its own, or the dictionary's when it arrived as UN.
fn effective_vr(tag: Tag, vr: VR) -> VR {
    if vr != VR::UN {
        return vr;
    }
    StandardDataDictionary.by_tag(tag).map(|e| e.vr().relaxed()).unwrap_or(VR::UN)
}

fn raw_text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let element = obj.get(tag)?;
    if element.vr() == VR::UN {
        let vr = effective_vr(tag, VR::UN);
        if matches!(vr, VR::US | VR::SS | VR::UL | VR::SL | VR::FL | VR::FD) {
            return binary_numbers(&element.to_bytes().ok()?, vr)
                .map(|v| v.iter().map(f64::to_string).collect::<Vec<_>>().join("\\"));
        }
        // Text VRs re-read from raw bytes; the default repertoire is ASCII, so lossy UTF-8 is
        // exact for it and visible (U+FFFD) for anything else.
        let bytes = element.to_bytes().ok()?;
        return Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    element.to_str().ok().map(Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue};

    fn obj(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
        InMemDicomObject::from_element_iter(elements)
    }

    #[test]
    fn ds_and_is_with_padding_leading_zeros_and_empties() {
        let o = obj(vec![
            DataElement::new(tags::SLICE_THICKNESS, VR::DS, PrimitiveValue::from(" 008.00 ")),
            DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, PrimitiveValue::from("-250\\ -250.0 \\080\0")),
            DataElement::new(tags::INSTANCE_NUMBER, VR::IS, PrimitiveValue::from("0012 ")),
            DataElement::new(tags::SERIES_NUMBER, VR::IS, PrimitiveValue::from("")),
            DataElement::new(tags::PIXEL_SPACING, VR::DS, PrimitiveValue::from("abc\\1")),
        ]);
        assert_eq!(floats(&o, tags::SLICE_THICKNESS), Some(vec![8.0]));
        assert_eq!(floats(&o, tags::IMAGE_POSITION_PATIENT), Some(vec![-250.0, -250.0, 80.0]));
        assert_eq!(int(&o, tags::INSTANCE_NUMBER), Some(12));
        assert_eq!(int(&o, tags::SERIES_NUMBER), None);
        assert_eq!(floats(&o, tags::PIXEL_SPACING), None);
        assert_eq!(floats(&o, tags::ROWS), None);
    }

    #[test]
    fn un_elements_are_reread_by_dictionary_vr() {
        let o = obj(vec![
            DataElement::new(tags::SLICE_THICKNESS, VR::UN, PrimitiveValue::from(b"2.5 ".to_vec())),
            DataElement::new(tags::ROWS, VR::UN, PrimitiveValue::from(vec![0x00u8, 0x02])),
            DataElement::new(tags::MODALITY, VR::UN, PrimitiveValue::from(b"CT".to_vec())),
        ]);
        assert_eq!(floats(&o, tags::SLICE_THICKNESS), Some(vec![2.5]));
        assert_eq!(int(&o, tags::ROWS), Some(512));
        assert_eq!(text(&o, tags::MODALITY).as_deref(), Some("CT"));
    }

    #[test]
    fn uid_validation() {
        assert!(is_valid_uid("1.2.840.10008.5.1.4.1.1.2"));
        assert!(is_valid_uid("1.2.03.4"));
        assert!(!is_valid_uid(""));
        assert!(!is_valid_uid("../../etc/passwd"));
        assert!(!is_valid_uid("1..2"));
        assert!(!is_valid_uid(".1.2"));
        assert!(!is_valid_uid(&"1".repeat(65)));
    }

    #[test]
    fn missing_study_uid_is_reported() {
        let o = obj(vec![
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2")),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.3")),
        ]);
        assert!(matches!(from_dataset(&o), Err(AttributeError::Missing("Study Instance UID"))));
    }
}
