//! DIMSE command sets (PS3.7 9.1 and 9.3): parse a request's command set and build responses.
//!
//! A command set is always encoded in Implicit VR Little Endian (PS3.7 6.3.1), whatever the
//! presentation context's transfer syntax. Only the fields this node acts on are decoded.

use dicom_core::{dicom_value, DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// Command Field (0000,0100) values this node handles (PS3.7 E.1).
pub mod field {
    /// C-STORE-RQ.
    pub const C_STORE_RQ: u16 = 0x0001;
    /// C-STORE-RSP.
    pub const C_STORE_RSP: u16 = 0x8001;
    /// C-ECHO-RQ.
    pub const C_ECHO_RQ: u16 = 0x0030;
    /// C-ECHO-RSP.
    pub const C_ECHO_RSP: u16 = 0x8030;
}

/// Command Data Set Type (0000,0800) value meaning "no data set" (PS3.7 E.1).
pub const NO_DATA_SET: u16 = 0x0101;

/// DIMSE status codes (PS3.7 C, PS3.4 B.2.3) used by the Store SCP.
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// Warning: coercion of data elements (PS3.4 B.2.3).
    pub const WARNING_COERCION: u16 = 0xB000;
    /// Failure: refused, out of resources (PS3.4 B.2.3).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Failure: data set does not match SOP Class (PS3.4 B.2.3).
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    /// Failure: cannot understand (PS3.4 B.2.3).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Failure: SOP Class not supported (PS3.7 C.5.3).
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Failure: unrecognized operation (PS3.7 C.5.9).
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
}

/// Maximum length of Error Comment (0000,0902): VR LO, 64 characters (PS3.7 E.1).
pub const ERROR_COMMENT_MAX: usize = 64;

/// The fields of a received request command set that this node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Command Field (0000,0100).
    pub field: u16,
    /// Message ID (0000,0110).
    pub message_id: u16,
    /// Affected SOP Class UID (0000,0002), trimmed; empty if absent.
    pub affected_sop_class_uid: String,
    /// Affected SOP Instance UID (0000,1000), trimmed; empty if absent.
    pub affected_sop_instance_uid: String,
    /// Whether a data set follows the command (Command Data Set Type != 0x0101).
    pub has_data_set: bool,
}

/// Why a command set could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The bytes are not an Implicit VR LE data set.
    #[error("command set is not a valid Implicit VR Little Endian data set: {0}")]
    Malformed(String),
    /// A mandatory field is missing or of the wrong type.
    #[error("command set lacks {0}")]
    Missing(&'static str),
}

impl Command {
    /// Decodes a complete command set (all command PDV fragments concatenated).
    ///
    /// # Errors
    /// [`CommandError`] when the bytes do not parse or Command Field / Message ID are missing.
    pub fn parse(bytes: &[u8]) -> Result<Self, CommandError> {
        let obj = InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .map_err(|e| CommandError::Malformed(e.to_string()))?;
        let uint = |tag: Tag| obj.get(tag).and_then(|e| e.to_int::<u16>().ok());
        let text =
            |tag: Tag| obj.get(tag).and_then(|e| e.to_str().ok()).map(|s| trim_uid(&s).to_owned()).unwrap_or_default();
        Ok(Command {
            field: uint(tags::COMMAND_FIELD).ok_or(CommandError::Missing("Command Field"))?,
            message_id: uint(tags::MESSAGE_ID).ok_or(CommandError::Missing("Message ID"))?,
            affected_sop_class_uid: text(tags::AFFECTED_SOP_CLASS_UID),
            affected_sop_instance_uid: text(tags::AFFECTED_SOP_INSTANCE_UID),
            has_data_set: uint(tags::COMMAND_DATA_SET_TYPE).unwrap_or(NO_DATA_SET) != NO_DATA_SET,
        })
    }
}

/// A response to send for a request: status and an optional Error Comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Status (0000,0900).
    pub status: u16,
    /// Error Comment (0000,0902), at most 64 characters once encoded.
    pub comment: Option<String>,
}

impl Outcome {
    /// Status Success (0000) without comment.
    pub fn success() -> Self {
        Outcome { status: status::SUCCESS, comment: None }
    }

    /// Any status with an Error Comment, truncated to 64 characters.
    pub fn with_comment(status: u16, comment: impl Into<String>) -> Self {
        Outcome { status, comment: Some(truncate_comment(comment.into())) }
    }

    /// Whether the status is Success or a Warning (PS3.7 C: 0000, 0001, Bxxx).
    pub fn is_success_or_warning(&self) -> bool {
        self.status == status::SUCCESS || self.status == 0x0001 || (self.status & 0xF000) == 0xB000
    }
}

fn truncate_comment(mut s: String) -> String {
    s.retain(|c| c.is_ascii() && !c.is_ascii_control() && c != '\\');
    s.truncate(ERROR_COMMENT_MAX);
    s
}

/// Builds the response command set for `request` (PS3.7 9.3.1.2 C-STORE-RSP, 9.3.5.2 C-ECHO-RSP):
/// the response Command Field, Message ID Being Responded To, Affected SOP Class/Instance UIDs,
/// Command Data Set Type "none", Status and, when given, Error Comment. Encoded in Implicit VR LE.
pub fn encode_response(request: &Command, outcome: &Outcome) -> Vec<u8> {
    let mut elements = vec![
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(uid_value(&request.affected_sop_class_uid)),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [request.field | 0x8000])),
        DataElement::new(tags::MESSAGE_ID_BEING_RESPONDED_TO, VR::US, dicom_value!(U16, [request.message_id])),
        DataElement::new(tags::COMMAND_DATA_SET_TYPE, VR::US, dicom_value!(U16, [NO_DATA_SET])),
        DataElement::new(tags::STATUS, VR::US, dicom_value!(U16, [outcome.status])),
    ];
    if let Some(comment) = &outcome.comment {
        elements.push(DataElement::new(tags::ERROR_COMMENT, VR::LO, PrimitiveValue::from(comment.as_str())));
    }
    if !request.affected_sop_instance_uid.is_empty() {
        elements.push(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(uid_value(&request.affected_sop_instance_uid)),
        ));
    }
    encode(elements)
}

/// Builds a request command set (used by the C-STORE SCU and by tests).
pub fn encode_store_request(message_id: u16, sop_class_uid: &str, sop_instance_uid: &str) -> Vec<u8> {
    encode(vec![
        DataElement::new(tags::AFFECTED_SOP_CLASS_UID, VR::UI, PrimitiveValue::from(uid_value(sop_class_uid))),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [field::C_STORE_RQ])),
        DataElement::new(tags::MESSAGE_ID, VR::US, dicom_value!(U16, [message_id])),
        DataElement::new(tags::PRIORITY, VR::US, dicom_value!(U16, [0])),
        DataElement::new(tags::COMMAND_DATA_SET_TYPE, VR::US, dicom_value!(U16, [0x0000])),
        DataElement::new(tags::AFFECTED_SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(uid_value(sop_instance_uid))),
    ])
}

fn encode(elements: Vec<DataElement<InMemDicomObject>>) -> Vec<u8> {
    let obj = InMemDicomObject::command_from_element_iter(elements);
    let mut out = Vec::with_capacity(192);
    // Writing a small in-memory command set to a Vec cannot fail for well-formed elements.
    if let Err(e) = obj.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased()) {
        tracing::error!(error = %e, "could not encode a command set");
    }
    out
}

/// A UI value padded to even length with a trailing NUL (PS3.5 6.2).
fn uid_value(uid: &str) -> String {
    let mut s = uid.to_owned();
    if s.len() % 2 == 1 {
        s.push('\0');
    }
    s
}

/// Trims the trailing NUL/space padding and leading spaces of a UID value.
pub fn trim_uid(s: &str) -> &str {
    s.trim_matches(|c: char| c == '\0' || c == ' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_request_round_trips() {
        let bytes = encode_store_request(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5");
        let cmd = Command::parse(&bytes).unwrap();
        assert_eq!(cmd.field, field::C_STORE_RQ);
        assert_eq!(cmd.message_id, 7);
        assert_eq!(cmd.affected_sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
        assert_eq!(cmd.affected_sop_instance_uid, "1.2.3.4.5");
        assert!(cmd.has_data_set);
    }

    #[test]
    fn response_carries_identifiers_and_truncated_comment() {
        let req = Command {
            field: field::C_STORE_RQ,
            message_id: 42,
            affected_sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            affected_sop_instance_uid: "1.2.3".into(),
            has_data_set: true,
        };
        let long = "x".repeat(100);
        let bytes = encode_response(&req, &Outcome::with_comment(status::OUT_OF_RESOURCES, long));
        let obj = InMemDicomObject::read_dataset_with_ts(&bytes[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased()).unwrap();
        assert_eq!(obj.get(tags::COMMAND_FIELD).unwrap().to_int::<u16>().unwrap(), 0x8001);
        assert_eq!(obj.get(tags::MESSAGE_ID_BEING_RESPONDED_TO).unwrap().to_int::<u16>().unwrap(), 42);
        assert_eq!(obj.get(tags::STATUS).unwrap().to_int::<u16>().unwrap(), 0xA700);
        assert_eq!(obj.get(tags::ERROR_COMMENT).unwrap().to_str().unwrap().trim().len(), 64);
        assert_eq!(trim_uid(&obj.get(tags::AFFECTED_SOP_INSTANCE_UID).unwrap().to_str().unwrap()), "1.2.3");
        // group length present and correct: everything after the (0000,0000) element (12 bytes)
        let gl = obj.get(tags::COMMAND_GROUP_LENGTH).unwrap().to_int::<u32>().unwrap();
        assert_eq!(gl as usize, bytes.len() - 12);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Command::parse(&[0xff; 7]).is_err());
        assert!(Command::parse(&[]).is_err());
    }

    #[test]
    fn warnings_count_as_success() {
        assert!(Outcome { status: 0xB000, comment: None }.is_success_or_warning());
        assert!(Outcome { status: 0xB007, comment: None }.is_success_or_warning());
        assert!(!Outcome { status: 0xA700, comment: None }.is_success_or_warning());
        assert!(!Outcome { status: 0xC000, comment: None }.is_success_or_warning());
    }
}
