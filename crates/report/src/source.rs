//! The source study's Patient and General Study module attributes (PS3.3 C.7.1.1, C.7.2.1),
//! copied into every result object so a PACS files it under the same patient and study.

use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;

use crate::ReportError;

/// Attributes copied from the source (values as decoded text; written back in UTF-8 with
/// Specific Character Set ISO_IR 192).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceStudy {
    /// (tag, VR name, value) of each present Patient / General Study / Patient Study attribute.
    pub attributes: Vec<(Tag, dicom_core::VR, String)>,
    /// Study Instance UID (0020,000D).
    pub study_instance_uid: String,
    /// Frame of Reference UID (0020,0052) of the analysed series.
    pub frame_of_reference_uid: Option<String>,
}

/// The attributes copied, with their VR.
pub const COPIED: &[(Tag, dicom_core::VR)] = &[
    (tags::PATIENT_NAME, dicom_core::VR::PN),
    (tags::PATIENT_ID, dicom_core::VR::LO),
    (tags::ISSUER_OF_PATIENT_ID, dicom_core::VR::LO),
    (tags::PATIENT_BIRTH_DATE, dicom_core::VR::DA),
    (tags::PATIENT_SEX, dicom_core::VR::CS),
    (tags::PATIENT_AGE, dicom_core::VR::AS),
    (tags::STUDY_INSTANCE_UID, dicom_core::VR::UI),
    (tags::STUDY_DATE, dicom_core::VR::DA),
    (tags::STUDY_TIME, dicom_core::VR::TM),
    (tags::REFERRING_PHYSICIAN_NAME, dicom_core::VR::PN),
    (tags::STUDY_ID, dicom_core::VR::SH),
    (tags::ACCESSION_NUMBER, dicom_core::VR::SH),
    (tags::STUDY_DESCRIPTION, dicom_core::VR::LO),
];

impl SourceStudy {
    /// Reads the attributes from one source instance (header only).
    ///
    /// # Errors
    /// [`ReportError::Source`] when the file does not parse.
    pub fn read(path: &Path) -> Result<Self, ReportError> {
        let obj = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path)
            .map_err(|e| ReportError::Source(format!("{}: {e}", path.display())))?;
        let text = |tag: Tag| {
            obj.get(tag)
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_matches(|c: char| c == ' ' || c == '\0').to_owned())
        };
        let attributes = COPIED.iter().filter_map(|&(tag, vr)| text(tag).map(|v| (tag, vr, v))).collect();
        Ok(SourceStudy {
            attributes,
            study_instance_uid: text(tags::STUDY_INSTANCE_UID).unwrap_or_default(),
            frame_of_reference_uid: text(tags::FRAME_OF_REFERENCE_UID).filter(|s| !s.is_empty()),
        })
    }

    /// Puts the copied attributes and Specific Character Set ISO_IR 192 into `obj`. Type 2
    /// attributes absent from the source are written empty.
    pub fn put_into(&self, obj: &mut dicom_object::InMemDicomObject) {
        use dicom_core::{DataElement, PrimitiveValue};
        obj.put(DataElement::new(tags::SPECIFIC_CHARACTER_SET, dicom_core::VR::CS, PrimitiveValue::from("ISO_IR 192")));
        for &(tag, vr) in COPIED {
            let value = self.attributes.iter().find(|(t, _, _)| *t == tag).map(|(_, _, v)| v.as_str());
            let type2 = matches!(
                tag,
                tags::PATIENT_NAME
                    | tags::PATIENT_ID
                    | tags::PATIENT_BIRTH_DATE
                    | tags::PATIENT_SEX
                    | tags::STUDY_DATE
                    | tags::STUDY_TIME
                    | tags::REFERRING_PHYSICIAN_NAME
                    | tags::STUDY_ID
                    | tags::ACCESSION_NUMBER
            );
            match value {
                Some(v) => obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v))),
                None if type2 => obj.put(DataElement::new(tag, vr, PrimitiveValue::Empty)),
                None => None,
            };
        }
    }
}
