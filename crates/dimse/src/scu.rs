//! The Storage SCU: sends instances to a peer with C-STORE (PS3.7 9.1.1, PS3.4 Annex B) over one
//! association (PS3.8 7.1) on dicom-ul's async client.
//!
//! - One presentation context is proposed per distinct (SOP Class, transfer syntax) of the
//!   instances (PS3.8 9.3.2.2); uncompressed ones also propose Explicit and Implicit VR Little
//!   Endian, and a data set is converted between those when the peer picks another one.
//! - Command and data set travel in separate PDVs (PS3.7 6.3.1, PS3.8 9.3.5); every P-DATA-TF PDU,
//!   header included, fits the peer's Maximum Length (PS3.8 D.1; 0 = unlimited), and every data
//!   fragment has even length unless the data set itself is odd.
//! - Fail fast: an instance with no accepted context is answered locally (not sent) with a result
//!   naming its SOP Class and transfer syntax; a rejected association or one with no accepted
//!   context at all is an [`ScuError`] carrying the peer's reason.
//! - Connection and every response are bounded by [`ScuConfig`] timeouts; TCP_NODELAY is set.
//!
//! No patient data is logged: only UIDs of classes and syntaxes, statuses and counts (instance
//! UIDs at debug level).

use std::fmt;
use std::io::{Read, Seek};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use dicom_dictionary_std::{tags, uids};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{FileMetaTable, InMemDicomObject};
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::client::AsyncTlsStream;
use dicom_ul::association::{Association, AsyncClientAssociation, Error as UlError};
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderASCEReason,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason, AssociationRJSource,
    PDataValueType, PresentationContextNegotiated, UserVariableItem,
};
use dicom_ul::{ClientAssociationOptions, Pdu};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, info, info_span, warn, Instrument, Span};

use crate::command::{self, field, status, Outcome};
use crate::negotiation::ACCEPTED_TRANSFER_SYNTAXES;
use crate::storage_classes::STORAGE_SOP_CLASSES;
use firstread_tls::{client_config, ClientTlsFiles};

/// Largest P-DATA-TF PDU we send (bytes, header included) when the peer's Maximum Length is 0
/// (unlimited, PS3.8 D.1.1) or larger than this: sending smaller PDUs is always allowed, and this
/// bounds our buffers.
pub const SEND_PDU_CAP: u32 = 256 * 1024;

/// P-DATA-TF PDU header: PDU type, reserved byte, PDU length (PS3.8 9.3.5, Table 9-22).
const PDU_HEADER: usize = 6;
/// Per-PDV overhead inside a P-DATA-TF: item length (4), presentation context ID (1) and message
/// control header (1) (PS3.8 9.3.5.1, Table 9-23; E.2).
const PDV_HEADER: usize = 6;
/// Bytes of PDUs collected before one socket write.
const WRITE_BATCH: usize = 256 * 1024;
/// Largest command set accepted in a response (real ones are ~200 bytes).
const MAX_COMMAND_SET: usize = 64 * 1024;
/// Presentation context IDs are odd numbers 1..=255 (PS3.8 9.3.2.2): at most 128 contexts.
pub const MAX_PRESENTATION_CONTEXTS: usize = 128;
/// Smallest Maximum Length dicom-ul can read with (PS3.8 D.1 allows less; nobody uses it).
const MIN_RECEIVE_PDU: u32 = 1018;

/// A Storage SCP to send to: its AE title and TCP address (PS3.8 7.1.1.3-7.1.1.5, called AE).
///
/// Parsed from `AE@host:port` (`STORESCP@127.0.0.1:104`, `PACS@[::1]:11112`). Deserializes from
/// that string or from a table `{ ae_title, host, port, tls }` (`tls`: DICOM TLS to this
/// destination, see [`ClientTlsFiles`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DestinationRepr")]
pub struct Destination {
    /// Called AE title (1-16 characters, no backslash or control characters; PS3.5 6.2 AE).
    pub ae_title: String,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `Some`: the association runs over DICOM TLS (PS3.15 B.9) with these files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsFiles>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DestinationRepr {
    Text(String),
    Fields {
        ae_title: String,
        host: String,
        port: u16,
        #[serde(default)]
        tls: Option<ClientTlsFiles>,
    },
}

impl TryFrom<DestinationRepr> for Destination {
    type Error = DestinationError;

    fn try_from(repr: DestinationRepr) -> Result<Self, Self::Error> {
        match repr {
            DestinationRepr::Text(s) => s.parse(),
            DestinationRepr::Fields { ae_title, host, port, tls } => {
                check_ae_title(&ae_title).map_err(DestinationError)?;
                if host.is_empty() {
                    return Err(DestinationError("empty host".into()));
                }
                Ok(Destination { ae_title, host, port, tls })
            }
        }
    }
}

/// Why a destination string is not `AE@host:port` (called AE title, PS3.8 7.1.1.4; address,
/// PS3.8 9.1.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid destination: {0} (expected AE@host:port)")]
pub struct DestinationError(String);

impl FromStr for Destination {
    type Err = DestinationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ae, address) = s.split_once('@').ok_or_else(|| DestinationError(format!("no '@' in {s:?}")))?;
        check_ae_title(ae).map_err(DestinationError)?;
        let (host, port) =
            address.rsplit_once(':').ok_or_else(|| DestinationError(format!("no ':port' in {address:?}")))?;
        let port: u16 = port.parse().map_err(|_| DestinationError(format!("bad port {port:?}")))?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() {
            return Err(DestinationError("empty host".into()));
        }
        Ok(Destination { ae_title: ae.to_owned(), host: host.to_owned(), port, tls: None })
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.ae_title, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.ae_title, self.host, self.port)
        }
    }
}

/// Checks an AE title (PS3.5 6.2, VR AE): 1-16 characters, not all spaces, no backslash or
/// control characters.
fn check_ae_title(ae: &str) -> Result<(), String> {
    if ae.trim().is_empty() {
        return Err("empty AE title".into());
    }
    if ae.len() > 16 {
        return Err(format!("AE title {ae:?} longer than 16 characters"));
    }
    if ae.chars().any(|c| c == '\\' || c.is_control() || !c.is_ascii()) {
        return Err(format!("AE title {ae:?} has a backslash, control or non-ASCII character"));
    }
    Ok(())
}

/// SCU settings (PS3.8 7.1.1 A-ASSOCIATE parameters, PS3.7 timeouts are local policy).
///
/// Defaults: calling AE `FIRSTREAD`, connect timeout 10 s, DIMSE timeout 60 s, maximum PDU length
/// 16384 bytes.
#[derive(Debug, Clone)]
pub struct ScuConfig {
    /// Our (calling) AE title (PS3.8 7.1.1.3).
    pub calling_ae_title: String,
    /// Bound on TCP connect plus the A-ASSOCIATE-RQ/AC exchange.
    pub connect_timeout: Duration,
    /// Bound on each C-STORE-RSP after its request was sent, on each socket write, and on the
    /// A-RELEASE exchange.
    pub dimse_timeout: Duration,
    /// Maximum Length we advertise for PDUs we receive (PS3.8 D.1). We only receive short
    /// responses; values below 1018 are raised to 1018 (dicom-ul's smallest).
    pub max_pdu_length: u32,
}

impl Default for ScuConfig {
    fn default() -> Self {
        ScuConfig {
            calling_ae_title: "FIRSTREAD".into(),
            connect_timeout: Duration::from_secs(10),
            dimse_timeout: Duration::from_secs(60),
            max_pdu_length: 16384,
        }
    }
}

/// One composite instance to send with C-STORE (PS3.7 9.1.1.1): identifiers plus its data set
/// bytes encoded in `transfer_syntax_uid`, without File Meta Information (PS3.10 7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// SOP Class UID (the presentation context's abstract syntax; Affected SOP Class UID).
    pub sop_class_uid: String,
    /// SOP Instance UID (Affected SOP Instance UID).
    pub sop_instance_uid: String,
    /// Transfer syntax of `dataset`.
    pub transfer_syntax_uid: String,
    /// The data set bytes, as they follow the meta group in a Part 10 file.
    pub dataset: Vec<u8>,
}

/// The File Meta Information of a Part 10 file that the SCU needs (PS3.10 7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part10Header {
    /// Media Storage SOP Class UID (0002,0002).
    pub sop_class_uid: String,
    /// Media Storage SOP Instance UID (0002,0003).
    pub sop_instance_uid: String,
    /// Transfer Syntax UID (0002,0010).
    pub transfer_syntax_uid: String,
    /// Offset of the data set in the file.
    pub dataset_offset: u64,
}

/// Why bytes or a file are not a usable DICOM Part 10 file (PS3.10 7.1).
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The file could not be read.
    #[error("could not read the file: {0}")]
    Io(#[from] std::io::Error),
    /// No "DICM" prefix after a 128-byte preamble (nor at the start).
    #[error("not a DICOM Part 10 file (no DICM prefix)")]
    NotPart10,
    /// The File Meta Information group does not parse.
    #[error("invalid File Meta Information: {0}")]
    Meta(String),
    /// A UID the C-STORE needs is empty.
    #[error("File Meta Information lacks {0}")]
    Missing(&'static str),
}

impl Instance {
    /// Splits a Part 10 file's bytes into meta identifiers and data set bytes (PS3.10 7.1).
    ///
    /// # Errors
    /// [`InstanceError`] for a missing "DICM" prefix, an unparsable meta group or empty UIDs.
    pub fn from_part10_bytes(bytes: &[u8]) -> Result<Instance, InstanceError> {
        let mut cursor = std::io::Cursor::new(bytes);
        let header = read_header(&mut cursor)?;
        let start = usize::try_from(header.dataset_offset).unwrap_or(usize::MAX).min(bytes.len());
        Ok(Instance {
            sop_class_uid: header.sop_class_uid,
            sop_instance_uid: header.sop_instance_uid,
            transfer_syntax_uid: header.transfer_syntax_uid,
            dataset: bytes[start..].to_vec(),
        })
    }

    /// Reads a Part 10 file and splits it as [`Instance::from_part10_bytes`] does.
    ///
    /// # Errors
    /// [`InstanceError::Io`] when the file cannot be read, else as `from_part10_bytes`.
    pub fn from_part10_file(path: impl AsRef<Path>) -> Result<Instance, InstanceError> {
        Instance::from_part10_bytes(&std::fs::read(path)?)
    }
}

/// Reads only the File Meta Information of a Part 10 file (PS3.10 7.1), e.g. to plan the
/// presentation contexts before loading data sets.
///
/// # Errors
/// As [`Instance::from_part10_file`].
pub fn read_part10_header(path: impl AsRef<Path>) -> Result<Part10Header, InstanceError> {
    let file = std::fs::File::open(path)?;
    read_header(&mut std::io::BufReader::new(file))
}

fn read_header<R: Read + Seek>(reader: &mut R) -> Result<Part10Header, InstanceError> {
    let mut head = [0u8; 132];
    let n = read_up_to(reader, &mut head)?;
    let start = if n >= 132 && &head[128..132] == b"DICM" {
        128
    } else if n >= 4 && &head[..4] == b"DICM" {
        0
    } else {
        return Err(InstanceError::NotPart10);
    };
    reader.seek(std::io::SeekFrom::Start(start))?;
    let meta = FileMetaTable::from_reader(&mut *reader).map_err(|e| InstanceError::Meta(e.to_string()))?;
    let dataset_offset = reader.stream_position()?;
    let uid = |s: &str, what| {
        let s = command::trim_uid(s);
        if s.is_empty() {
            Err(InstanceError::Missing(what))
        } else {
            Ok(s.to_owned())
        }
    };
    Ok(Part10Header {
        sop_class_uid: uid(meta.media_storage_sop_class_uid(), "Media Storage SOP Class UID")?,
        sop_instance_uid: uid(meta.media_storage_sop_instance_uid(), "Media Storage SOP Instance UID")?,
        transfer_syntax_uid: uid(meta.transfer_syntax(), "Transfer Syntax UID")?,
        dataset_offset,
    })
}

fn read_up_to<R: Read>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The result of one instance: the C-STORE-RSP Status and Error Comment (PS3.7 9.1.1.1.9,
/// 9.3.1.2; PS3.4 B.2.3), or a local failure when it could not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreResult {
    /// The instance's SOP Instance UID.
    pub sop_instance_uid: String,
    /// Status (0000,0900) of the response; for an instance not sent, 0122 (SOP Class not
    /// supported, PS3.7 C.5.3) when no context was accepted for it, C000 when its data set could
    /// not be converted to the accepted transfer syntax.
    pub status: u16,
    /// Error Comment (0000,0902) of the response, or why the instance was not sent.
    pub comment: Option<String>,
    /// Whether the instance went to the peer (false: decided locally, see `status`).
    pub sent: bool,
}

impl StoreResult {
    /// Success or Warning (0000, 0001, Bxxx such as B000, B006, B007; PS3.4 B.2.3): the peer
    /// has the instance. Same rule as [`Outcome::is_success_or_warning`].
    pub fn is_success_or_warning(&self) -> bool {
        Outcome { status: self.status, comment: None }.is_success_or_warning()
    }

    /// A Warning status (0001 or Bxxx; PS3.7 C.4).
    pub fn is_warning(&self) -> bool {
        self.is_success_or_warning() && self.status != status::SUCCESS
    }

    fn local(instance: &Instance, status: u16, comment: String) -> StoreResult {
        StoreResult { sop_instance_uid: instance.sop_instance_uid.clone(), status, comment: Some(comment), sent: false }
    }
}

/// Why an association could not be used (PS3.8 7.1-7.3, 9.3.4; PS3.7 timeouts).
#[derive(Debug, thiserror::Error)]
pub enum ScuError {
    /// The calling AE title or a setting is invalid.
    #[error("invalid SCU configuration: {0}")]
    Config(String),
    /// TCP connection failed (refused, unreachable, name not resolved).
    #[error("could not connect to {peer}: {message}")]
    Connect {
        /// `AE@host:port`.
        peer: String,
        /// The transport error.
        message: String,
    },
    /// Connecting or a response took longer than configured.
    #[error("{what} with {peer} timed out after {after:?}")]
    Timeout {
        /// `AE@host:port`.
        peer: String,
        /// What was awaited.
        what: &'static str,
        /// The configured bound.
        after: Duration,
    },
    /// A-ASSOCIATE-RJ (PS3.8 9.3.4, Table 9-21).
    #[error("association rejected by {peer}: {description} (result {result}, source {rj_source}, reason {reason})")]
    Rejected {
        /// `AE@host:port`.
        peer: String,
        /// Result: 1 permanent, 2 transient.
        result: u8,
        /// Source: 1 service user, 2 service provider (ACSE), 3 service provider (presentation).
        rj_source: u8,
        /// Reason/Diag. within the source.
        reason: u8,
        /// The three in words.
        description: String,
    },
    /// A-ASSOCIATE-AC with every proposed presentation context rejected (PS3.8 9.3.3.2).
    #[error("no presentation context accepted by {peer} for {proposed}")]
    NoAcceptedContext {
        /// `AE@host:port`.
        peer: String,
        /// The proposed SOP Classes and transfer syntaxes, in words.
        proposed: String,
    },
    /// The peer sent A-ABORT (PS3.8 7.3-7.4).
    #[error("association aborted by {peer}{detail}")]
    Aborted {
        /// `AE@host:port`.
        peer: String,
        /// Abort source, when known.
        detail: String,
    },
    /// The connection closed or failed without release.
    #[error("connection to {peer} lost: {message}")]
    ConnectionLost {
        /// `AE@host:port`.
        peer: String,
        /// The transport error.
        message: String,
    },
    /// The peer violated the protocol (unexpected PDU, malformed or mismatched response).
    #[error("protocol error with {peer}: {message}")]
    Protocol {
        /// `AE@host:port`.
        peer: String,
        /// What was wrong.
        message: String,
    },
}

/// Name of a SOP Class for messages (PS3.6 Annex A), its UID when unknown.
pub fn sop_class_name(uid: &str) -> String {
    if uid == uids::VERIFICATION {
        return "Verification".into();
    }
    STORAGE_SOP_CLASSES
        .iter()
        .find(|(u, _, _)| *u == uid)
        .map(|(_, n, _)| (*n).to_owned())
        .unwrap_or_else(|| uid.into())
}

/// Name of a transfer syntax for messages (PS3.5 10, PS3.6 Annex A), its UID when unknown.
pub fn transfer_syntax_name(uid: &str) -> String {
    ACCEPTED_TRANSFER_SYNTAXES
        .iter()
        .find(|(u, _)| *u == uid)
        .map(|(_, n)| (*n).to_owned())
        .or_else(|| TransferSyntaxRegistry.get(uid).map(|ts| ts.name().to_owned()))
        .unwrap_or_else(|| uid.into())
}

/// Explicit VR Big Endian (retired, PS3.5 A.3): still found in old files.
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

/// Transfer syntaxes whose data sets this SCU can convert into each other (native, not deflated;
/// PS3.5 A.1-A.3).
const UNCOMPRESSED: &[&str] =
    &[uids::IMPLICIT_VR_LITTLE_ENDIAN, uids::EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN];

fn is_uncompressed(ts: &str) -> bool {
    UNCOMPRESSED.contains(&ts)
}

/// The presentation contexts to propose (PS3.8 9.3.2.2) for (SOP Class, transfer syntax) pairs:
/// one per distinct pair in first-seen order, at most [`MAX_PRESENTATION_CONTEXTS`]; each
/// proposes the pair's transfer syntax, and uncompressed ones also Explicit then Implicit VR LE.
pub fn propose_contexts<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(String, Vec<String>)> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for pair in pairs {
        if !seen.contains(&pair) && seen.len() < MAX_PRESENTATION_CONTEXTS {
            seen.push(pair);
        }
    }
    seen.into_iter()
        .map(|(sop, ts)| {
            let mut syntaxes = vec![ts.to_owned()];
            if is_uncompressed(ts) {
                for extra in [uids::EXPLICIT_VR_LITTLE_ENDIAN, uids::IMPLICIT_VR_LITTLE_ENDIAN] {
                    if !syntaxes.iter().any(|s| s == extra) {
                        syntaxes.push(extra.to_owned());
                    }
                }
            }
            (sop.to_owned(), syntaxes)
        })
        .collect()
}

/// Data bytes per PDV so that a P-DATA-TF PDU with one PDV (6-byte PDU header, 4-byte item
/// length, context ID, message control header, data; PS3.8 9.3.5) is at most the peer's Maximum
/// Length (PS3.8 D.1; 0 = unlimited, then [`SEND_PDU_CAP`]), rounded down to even.
///
/// Counting the PDU header against the limit is stricter than the standard (which bounds the
/// variable field), so the PDU fits whichever way the peer counts. `None` if no data fits.
pub fn max_fragment_len(peer_max_pdu: u32) -> Option<usize> {
    let limit = if peer_max_pdu == 0 { SEND_PDU_CAP } else { peer_max_pdu.min(SEND_PDU_CAP) } as usize;
    let room = limit.checked_sub(PDU_HEADER + PDV_HEADER)? & !1;
    (room >= 2).then_some(room)
}

/// Appends one P-DATA-TF PDU carrying one PDV (PS3.8 9.3.5; message control header E.2: bit 0
/// command, bit 1 last fragment).
pub fn encode_pdata(out: &mut Vec<u8>, context_id: u8, value_type: PDataValueType, is_last: bool, data: &[u8]) {
    let pdv_len = (data.len() + 2) as u32;
    out.push(0x04);
    out.push(0x00);
    out.extend_from_slice(&(pdv_len + 4).to_be_bytes());
    out.extend_from_slice(&pdv_len.to_be_bytes());
    out.push(context_id);
    let mut control = 0u8;
    if value_type == PDataValueType::Command {
        control |= 0x01;
    }
    if is_last {
        control |= 0x02;
    }
    out.push(control);
    out.extend_from_slice(data);
}

/// An association to a Storage SCP for sending instances with C-STORE (PS3.7 9.1.1).
///
/// [`store_all`] is the usual entry; use this directly to load data sets lazily (one in memory
/// at a time): propose the (SOP Class, transfer syntax) pairs up front, then [`StoreScu::store`]
/// each instance, then [`StoreScu::release`].
pub struct StoreScu {
    association: Link,
    peer: String,
    span: Span,
    dimse_timeout: Duration,
    fragment: usize,
    next_message_id: u16,
    buffer: Vec<u8>,
}

/// The association over plain TCP or DICOM TLS (boxed: a TLS association holds its connection's
/// buffers).
enum Link {
    Plain(Box<AsyncClientAssociation<TcpStream>>),
    Tls(Box<AsyncClientAssociation<AsyncTlsStream>>),
}

/// Runs `$body` with `$a` bound to the association, whichever its transport.
macro_rules! on_link {
    ($link:expr, $a:ident => $body:expr) => {
        match $link {
            Link::Plain($a) => $body,
            Link::Tls($a) => $body,
        }
    };
}

impl Link {
    fn tcp(&mut self) -> &TcpStream {
        match self {
            Link::Plain(a) => a.inner_stream(),
            Link::Tls(a) => a.inner_stream().get_ref().0,
        }
    }

    fn presentation_contexts(&self) -> &[PresentationContextNegotiated] {
        on_link!(self, a => a.presentation_contexts())
    }

    fn user_variables(&self) -> &[UserVariableItem] {
        on_link!(self, a => a.user_variables())
    }

    fn acceptor_max_pdu_length(&self) -> u32 {
        on_link!(self, a => a.acceptor_max_pdu_length())
    }

    fn peer_ae_title(&self) -> &str {
        on_link!(self, a => a.peer_ae_title())
    }

    /// Writes and flushes: TLS keeps encrypted bytes in its buffer until flushed, and the peer
    /// would wait for the rest of the PDU while we wait for its response.
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        on_link!(self, a => {
            let stream = a.inner_stream();
            stream.write_all(bytes).await?;
            stream.flush().await
        })
    }

    async fn receive(&mut self) -> Result<Pdu, UlError> {
        on_link!(self, a => a.receive().await)
    }

    async fn release(self) -> Result<(), UlError> {
        match self {
            Link::Plain(a) => a.release().await,
            Link::Tls(a) => a.release().await,
        }
    }

    async fn abort(self) -> Result<(), UlError> {
        match self {
            Link::Plain(a) => a.abort().await,
            Link::Tls(a) => a.abort().await,
        }
    }
}

impl fmt::Debug for StoreScu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreScu").field("peer", &self.peer).field("fragment", &self.fragment).finish()
    }
}

impl StoreScu {
    /// Connects and negotiates (A-ASSOCIATE, PS3.8 7.1) contexts for `pairs` of
    /// (SOP Class UID, transfer syntax UID), as [`propose_contexts`] builds them.
    ///
    /// # Errors
    /// [`ScuError::Connect`], [`ScuError::Timeout`] (connect + negotiation beyond
    /// `connect_timeout`), [`ScuError::Rejected`], [`ScuError::NoAcceptedContext`], others for
    /// broken peers.
    pub async fn connect<'a>(
        dest: &Destination,
        config: &ScuConfig,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<StoreScu, ScuError> {
        let peer = dest.to_string();
        let span = info_span!("scu", called = %dest.ae_title, addr = %format_args!("{}:{}", dest.host, dest.port));
        let proposed = propose_contexts(pairs);
        Self::connect_inner(dest, config, proposed, peer, span.clone()).instrument(span).await
    }

    async fn connect_inner(
        dest: &Destination,
        config: &ScuConfig,
        proposed: Vec<(String, Vec<String>)>,
        peer: String,
        span: Span,
    ) -> Result<StoreScu, ScuError> {
        check_ae_title(&config.calling_ae_title).map_err(ScuError::Config)?;
        check_ae_title(&dest.ae_title).map_err(ScuError::Config)?;
        if proposed.is_empty() {
            return Err(ScuError::Config("no presentation context to propose".into()));
        }
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(config.calling_ae_title.clone())
            .called_ae_title(dest.ae_title.clone())
            .max_pdu_length(config.max_pdu_length.max(MIN_RECEIVE_PDU))
            .read_timeout(config.dimse_timeout)
            .write_timeout(config.dimse_timeout)
            .connection_timeout(config.connect_timeout);
        for (sop, syntaxes) in &proposed {
            options = options.with_presentation_context(sop.clone(), syntaxes.clone());
        }
        let address = (dest.host.as_str(), dest.port);
        let tls = match &dest.tls {
            Some(files) => Some(client_config(files, &dest.host).map_err(|e| ScuError::Config(e.to_string()))?),
            None => None,
        };
        let establish = async {
            match tls {
                None => options.establish_async(address).await.map(|a| Link::Plain(Box::new(a))),
                Some(tls) => options
                    .tls_config(tls.config)
                    .server_name(&tls.server_name)
                    .establish_tls_async(address)
                    .await
                    .map(|a| Link::Tls(Box::new(a))),
            }
        };
        let established = tokio::time::timeout(config.connect_timeout, establish).await;
        let mut association = match established {
            Err(_) => {
                warn!(after = ?config.connect_timeout, "association not established in time");
                return Err(ScuError::Timeout { peer, what: "association set-up", after: config.connect_timeout });
            }
            Ok(Err(e)) => {
                let e = map_establish_error(e, &peer, &proposed, config.connect_timeout);
                warn!(error = %e, "association not established");
                return Err(e);
            }
            Ok(Ok(a)) => a,
        };
        // The A-ASSOCIATE-RQ went out as a single write before this; everything after is
        // request/response and must not wait on delayed ACKs (benchmark notes: ~40 ms each).
        if let Err(e) = association.tcp().set_nodelay(true) {
            debug!(error = %e, "could not set TCP_NODELAY");
        }
        let raw_peer_max = association.user_variables().iter().find_map(|v| match v {
            UserVariableItem::MaxLength(n) => Some(*n),
            _ => None,
        });
        let peer_max = if raw_peer_max == Some(0) { 0 } else { association.acceptor_max_pdu_length() };
        let Some(fragment) = max_fragment_len(peer_max) else {
            let _ = association.abort().await;
            return Err(ScuError::Protocol {
                peer,
                message: format!("peer maximum PDU length {peer_max} is too small"),
            });
        };
        let accepted = association.presentation_contexts();
        // dicom-ul numbers the proposed contexts 1, 3, 5... in order and keeps only accepted ones.
        let not_accepted: Vec<String> = proposed
            .iter()
            .enumerate()
            .filter(|(i, _)| !accepted.iter().any(|pc| usize::from(pc.id) == 2 * i + 1))
            .map(|(_, (sop, syntaxes))| describe_context(sop, syntaxes))
            .collect();
        info!(
            peer_ae = %association.peer_ae_title().trim(),
            proposed = proposed.len(),
            accepted = accepted.len(),
            peer_max_pdu = peer_max,
            "association established"
        );
        if !not_accepted.is_empty() {
            warn!(contexts = %not_accepted.join("; "), "presentation contexts not accepted");
        }
        Ok(StoreScu {
            association,
            peer,
            span,
            dimse_timeout: config.dimse_timeout,
            fragment,
            next_message_id: 1,
            buffer: Vec::with_capacity(WRITE_BATCH + fragment + PDU_HEADER + PDV_HEADER),
        })
    }

    /// The accepted presentation contexts (PS3.8 9.3.3.2).
    pub fn accepted_contexts(&self) -> &[PresentationContextNegotiated] {
        self.association.presentation_contexts()
    }

    /// Data bytes per PDV used on this association (PS3.8 9.3.5; see [`max_fragment_len`]).
    pub fn fragment_len(&self) -> usize {
        self.fragment
    }

    /// Sends one instance with C-STORE-RQ (PS3.7 9.3.1.1) and waits for its C-STORE-RSP
    /// (PS3.7 9.3.1.2). Non-success statuses are results, not errors; an instance without an
    /// accepted context is answered locally (not sent).
    ///
    /// # Errors
    /// Association-level failures ([`ScuError::Timeout`], [`ScuError::Aborted`],
    /// [`ScuError::ConnectionLost`], [`ScuError::Protocol`]); the association is then unusable:
    /// call [`StoreScu::abort`].
    pub async fn store(&mut self, instance: &Instance) -> Result<StoreResult, ScuError> {
        let span = self.span.clone();
        self.store_inner(instance).instrument(span).await
    }

    async fn store_inner(&mut self, instance: &Instance) -> Result<StoreResult, ScuError> {
        let sop = command::trim_uid(&instance.sop_class_uid);
        let ts = command::trim_uid(&instance.transfer_syntax_uid);
        let Some((context_id, accepted_ts)) = self.choose_context(sop, ts) else {
            let comment =
                format!("no accepted presentation context for {} in {}", sop_class_name(sop), transfer_syntax_name(ts));
            warn!(sop_class = sop, transfer_syntax = ts, "instance not sent: no accepted presentation context");
            return Ok(StoreResult::local(instance, status::SOP_CLASS_NOT_SUPPORTED, comment));
        };
        let converted;
        let dataset: &[u8] = if accepted_ts == ts {
            &instance.dataset
        } else {
            match convert(&instance.dataset, ts, &accepted_ts) {
                Ok(bytes) => {
                    converted = bytes;
                    &converted
                }
                Err(e) => {
                    let comment = format!(
                        "could not convert from {} to {}: {e}",
                        transfer_syntax_name(ts),
                        transfer_syntax_name(&accepted_ts)
                    );
                    warn!(from = ts, to = %accepted_ts, error = %e, "instance not sent: conversion failed");
                    return Ok(StoreResult::local(instance, status::CANNOT_UNDERSTAND, comment));
                }
            }
        };
        if dataset.len() % 2 == 1 {
            warn!(len = dataset.len(), "data set has odd length; its last fragment is odd");
        }
        let message_id = self.next_message_id;
        self.next_message_id = match self.next_message_id.wrapping_add(1) {
            0 => 1,
            n => n,
        };
        debug!(message_id, sop_instance = %instance.sop_instance_uid, context_id, len = dataset.len(), "C-STORE-RQ");
        let command = command::encode_store_request(message_id, sop, command::trim_uid(&instance.sop_instance_uid));
        self.send_message(context_id, &command, dataset).await?;
        let (status, comment) = self.receive_response(message_id).await?;
        let result = StoreResult { sop_instance_uid: instance.sop_instance_uid.clone(), status, comment, sent: true };
        if !result.is_success_or_warning() {
            warn!(
                message_id,
                status = %format_args!("{status:04X}"),
                comment = result.comment.as_deref().unwrap_or(""),
                sop_class = %sop_class_name(sop),
                "C-STORE failed"
            );
        } else if result.is_warning() {
            info!(
                message_id,
                status = %format_args!("{status:04X}"),
                comment = result.comment.as_deref().unwrap_or(""),
                "C-STORE warning"
            );
        }
        Ok(result)
    }

    /// An accepted context for the SOP Class: the instance's own transfer syntax first, else one
    /// its data set converts to.
    fn choose_context(&self, sop: &str, ts: &str) -> Option<(u8, String)> {
        let contexts = self.association.presentation_contexts();
        let candidates = || contexts.iter().filter(move |pc| command::trim_uid(&pc.abstract_syntax) == sop);
        candidates()
            .find(|pc| command::trim_uid(&pc.transfer_syntax) == ts)
            .or_else(|| {
                if is_uncompressed(ts) {
                    candidates().find(|pc| is_uncompressed(command::trim_uid(&pc.transfer_syntax)))
                } else {
                    None
                }
            })
            .map(|pc| (pc.id, command::trim_uid(&pc.transfer_syntax).to_owned()))
    }

    /// Writes the command set then the data set as PDVs of at most `self.fragment` bytes, one
    /// PDV per P-DATA-TF PDU (PS3.8 9.3.5, PS3.7 6.3.1).
    async fn send_message(&mut self, context_id: u8, command: &[u8], dataset: &[u8]) -> Result<(), ScuError> {
        self.buffer.clear();
        let parts = [(PDataValueType::Command, command), (PDataValueType::Data, dataset)];
        for (value_type, bytes) in parts {
            let count = bytes.len().div_ceil(self.fragment).max(1);
            let mut chunks = bytes.chunks(self.fragment);
            for i in 0..count {
                let chunk = chunks.next().unwrap_or(&[]);
                encode_pdata(&mut self.buffer, context_id, value_type.clone(), i + 1 == count, chunk);
                if self.buffer.len() >= WRITE_BATCH {
                    self.flush().await?;
                }
            }
        }
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), ScuError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let write = self.association.write_all(&self.buffer);
        let outcome = tokio::time::timeout(self.dimse_timeout, write).await;
        self.buffer.clear();
        match outcome {
            Ok(Ok(())) => Ok(()),
            Err(_) => Err(ScuError::Timeout { peer: self.peer.clone(), what: "sending", after: self.dimse_timeout }),
            Ok(Err(e)) => {
                // A peer that aborted before closing usually left its A-ABORT in our receive
                // buffer: report that rather than the broken pipe.
                if let Ok(Ok(Pdu::AbortRQ { source })) =
                    tokio::time::timeout(Duration::from_millis(200), self.association.receive()).await
                {
                    return Err(ScuError::Aborted { peer: self.peer.clone(), detail: format!(" ({source:?})") });
                }
                Err(ScuError::ConnectionLost { peer: self.peer.clone(), message: e.to_string() })
            }
        }
    }

    /// Reads PDUs until the complete response command set arrives, and returns its Status and
    /// Error Comment (PS3.7 9.3.1.2).
    async fn receive_response(&mut self, message_id: u16) -> Result<(u16, Option<String>), ScuError> {
        let mut bytes = Vec::new();
        loop {
            let pdu = match tokio::time::timeout(self.dimse_timeout, self.association.receive()).await {
                Err(_) => return Err(self.timeout("waiting for C-STORE-RSP")),
                Ok(Err(UlError::Timeout { .. })) => return Err(self.timeout("waiting for C-STORE-RSP")),
                Ok(Err(e)) => return Err(ScuError::ConnectionLost { peer: self.peer.clone(), message: e.to_string() }),
                Ok(Ok(pdu)) => pdu,
            };
            match pdu {
                Pdu::PData { data } => {
                    for pdv in data {
                        if pdv.value_type != PDataValueType::Command {
                            return Err(self.protocol("data PDV where a C-STORE-RSP was expected"));
                        }
                        bytes.extend_from_slice(&pdv.data);
                        if bytes.len() > MAX_COMMAND_SET {
                            return Err(self.protocol("response command set too large"));
                        }
                        if pdv.is_last {
                            return parse_store_response(&bytes, message_id).map_err(|m| self.protocol(&m));
                        }
                    }
                }
                Pdu::AbortRQ { source } => {
                    warn!(?source, "A-ABORT received");
                    return Err(ScuError::Aborted { peer: self.peer.clone(), detail: format!(" ({source:?})") });
                }
                other => {
                    return Err(self.protocol(&format!("unexpected {}", other.short_description())));
                }
            }
        }
    }

    fn timeout(&self, what: &'static str) -> ScuError {
        warn!(after = ?self.dimse_timeout, what, "DIMSE timeout");
        ScuError::Timeout { peer: self.peer.clone(), what, after: self.dimse_timeout }
    }

    fn protocol(&self, message: &str) -> ScuError {
        warn!(message, "protocol error");
        ScuError::Protocol { peer: self.peer.clone(), message: message.to_owned() }
    }

    /// Releases the association (A-RELEASE, PS3.8 7.2) within the DIMSE timeout.
    ///
    /// # Errors
    /// [`ScuError::Timeout`] or [`ScuError::ConnectionLost`] when the peer does not answer
    /// A-RELEASE-RP properly; every response received before stays valid.
    pub async fn release(self) -> Result<(), ScuError> {
        let StoreScu { association, peer, span, dimse_timeout, .. } = self;
        async move {
            match tokio::time::timeout(dimse_timeout, association.release()).await {
                Ok(Ok(())) => {
                    debug!("association released");
                    Ok(())
                }
                Ok(Err(e)) => Err(ScuError::ConnectionLost { peer, message: format!("release failed: {e}") }),
                Err(_) => Err(ScuError::Timeout { peer, what: "release", after: dimse_timeout }),
            }
        }
        .instrument(span)
        .await
    }

    /// Aborts the association (A-ABORT, PS3.8 7.3), e.g. after a failed [`StoreScu::store`].
    pub async fn abort(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.association.abort()).await;
    }
}

/// Sends every instance over ONE association and returns one result per instance, in order
/// (PS3.7 9.1.1 C-STORE; PS3.8 7.1 A-ASSOCIATE, 7.2 A-RELEASE).
///
/// Contexts are proposed per [`propose_contexts`]. `progress` is called after each instance,
/// including those answered locally. An empty list returns at once without connecting. A failed
/// A-RELEASE after all responses is only logged: the responses stand.
///
/// # Errors
/// [`ScuError`] when the association cannot be set up (connect, timeout, A-ASSOCIATE-RJ, no
/// accepted context) or fails mid-way (timeout, A-ABORT, lost connection, protocol error); the
/// instances `progress` reported before that were answered by the peer.
pub async fn store_all(
    dest: &Destination,
    config: &ScuConfig,
    instances: impl IntoIterator<Item = Instance>,
    mut progress: impl FnMut(&StoreResult),
) -> Result<Vec<StoreResult>, ScuError> {
    let instances: Vec<Instance> = instances.into_iter().collect();
    if instances.is_empty() {
        return Ok(Vec::new());
    }
    let pairs =
        instances.iter().map(|i| (command::trim_uid(&i.sop_class_uid), command::trim_uid(&i.transfer_syntax_uid)));
    let mut scu = StoreScu::connect(dest, config, pairs).await?;
    let mut results = Vec::with_capacity(instances.len());
    for instance in &instances {
        match scu.store(instance).await {
            Ok(result) => {
                progress(&result);
                results.push(result);
            }
            Err(e) => {
                scu.abort().await;
                return Err(e);
            }
        }
    }
    let span = scu.span.clone();
    if let Err(e) = scu.release().await {
        span.in_scope(|| warn!(error = %e, "A-RELEASE failed after all responses"));
    }
    let failed = results.iter().filter(|r| !r.is_success_or_warning()).count();
    let warnings = results.iter().filter(|r| r.is_warning()).count();
    span.in_scope(|| info!(instances = results.len(), warnings, failed, "C-STORE done"));
    Ok(results)
}

/// Decodes a C-STORE-RSP command set (PS3.7 9.3.1.2): Command Field 8001, Message ID Being
/// Responded To equal to ours, Status; Error Comment when present.
fn parse_store_response(bytes: &[u8], message_id: u16) -> Result<(u16, Option<String>), String> {
    let obj = InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| format!("undecodable response command set: {e}"))?;
    let uint = |tag| obj.get(tag).and_then(|e| e.to_int::<u16>().ok());
    match uint(tags::COMMAND_FIELD) {
        Some(field::C_STORE_RSP) => {}
        Some(other) => return Err(format!("expected C-STORE-RSP, got command field {other:04X}")),
        None => return Err("response without Command Field".into()),
    }
    match uint(tags::MESSAGE_ID_BEING_RESPONDED_TO) {
        Some(id) if id == message_id => {}
        Some(id) => return Err(format!("response to message {id}, expected {message_id}")),
        None => return Err("response without Message ID Being Responded To".into()),
    }
    let status = uint(tags::STATUS).ok_or("response without Status")?;
    let comment = obj
        .get(tags::ERROR_COMMENT)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' ').to_owned())
        .filter(|s| !s.is_empty());
    Ok((status, comment))
}

/// Re-encodes a data set between uncompressed transfer syntaxes (PS3.5 A.1-A.3).
fn convert(dataset: &[u8], from: &str, to: &str) -> Result<Vec<u8>, String> {
    let from_ts = TransferSyntaxRegistry.get(from).ok_or("unknown source transfer syntax")?;
    let to_ts = TransferSyntaxRegistry.get(to).ok_or("unknown target transfer syntax")?;
    let obj = InMemDicomObject::read_dataset_with_ts(dataset, from_ts).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(dataset.len() + 256);
    obj.write_dataset_with_ts(&mut out, to_ts).map_err(|e| e.to_string())?;
    Ok(out)
}

fn describe_context(sop: &str, syntaxes: &[String]) -> String {
    let names: Vec<String> = syntaxes.iter().map(|t| transfer_syntax_name(t)).collect();
    format!("{} in {}", sop_class_name(sop), names.join(" or "))
}

fn map_establish_error(e: UlError, peer: &str, proposed: &[(String, Vec<String>)], after: Duration) -> ScuError {
    let peer = peer.to_owned();
    let text = e.to_string();
    match e {
        UlError::Connect { source, .. } | UlError::ToAddress { source, .. } => {
            ScuError::Connect { peer, message: source.to_string() }
        }
        UlError::Timeout { .. } => ScuError::Timeout { peer, what: "association set-up", after },
        UlError::Rejected { association_rj, .. } => rejected(peer, &association_rj),
        UlError::NoAcceptedPresentationContexts { .. } => {
            let proposed = proposed.iter().map(|(sop, ts)| describe_context(sop, ts)).collect::<Vec<_>>().join("; ");
            ScuError::NoAcceptedContext { peer, proposed }
        }
        UlError::UnexpectedPdu { pdu, .. } => match *pdu {
            Pdu::AbortRQ { source } => ScuError::Aborted { peer, detail: format!(" during set-up ({source:?})") },
            other => {
                ScuError::Protocol { peer, message: format!("unexpected {} during set-up", other.short_description()) }
            }
        },
        UlError::ConnectionClosed { .. } | UlError::WireSend { .. } | UlError::WireRead { .. } => {
            ScuError::ConnectionLost { peer, message: format!("during association set-up: {text}") }
        }
        _ => ScuError::Protocol { peer, message: format!("association set-up failed: {text}") },
    }
}

fn rejected(peer: String, rj: &AssociationRJ) -> ScuError {
    let (result, result_text) = match rj.result {
        AssociationRJResult::Permanent => (1, "permanent"),
        AssociationRJResult::Transient => (2, "transient"),
    };
    let (rj_source, source_text, reason) = match &rj.source {
        AssociationRJSource::ServiceUser(r) => (
            1,
            "service user",
            match r {
                AssociationRJServiceUserReason::NoReasonGiven => 1,
                AssociationRJServiceUserReason::ApplicationContextNameNotSupported => 2,
                AssociationRJServiceUserReason::CallingAETitleNotRecognized => 3,
                AssociationRJServiceUserReason::CalledAETitleNotRecognized => 7,
                AssociationRJServiceUserReason::Reserved(x) => *x,
            },
        ),
        AssociationRJSource::ServiceProviderASCE(r) => (
            2,
            "service provider (ACSE)",
            match r {
                AssociationRJServiceProviderASCEReason::NoReasonGiven => 1,
                AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported => 2,
            },
        ),
        AssociationRJSource::ServiceProviderPresentation(r) => (
            3,
            "service provider (presentation)",
            match r {
                AssociationRJServiceProviderPresentationReason::TemporaryCongestion => 1,
                AssociationRJServiceProviderPresentationReason::LocalLimitExceeded => 2,
                AssociationRJServiceProviderPresentationReason::Reserved(x) => *x,
            },
        ),
    };
    let description = format!("{result_text}, {source_text}: {}", rj.source);
    ScuError::Rejected { peer, result, rj_source, reason, description }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::meta::FileMetaTableBuilder;
    use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;

    const CT: &str = uids::CT_IMAGE_STORAGE;

    #[test]
    fn destination_parses_and_displays() {
        let d: Destination = "STORESCP@127.0.0.1:104".parse().unwrap();
        assert_eq!(d, Destination { ae_title: "STORESCP".into(), host: "127.0.0.1".into(), port: 104, tls: None });
        assert_eq!(d.to_string(), "STORESCP@127.0.0.1:104");
        let v6: Destination = "PACS@[::1]:11112".parse().unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "PACS@[::1]:11112");
        for bad in
            ["", "127.0.0.1:104", "A@host", "A@host:99999", "A@:104", "@h:1", "THIS_IS_WAY_TOO_LONG@h:1", "A\\B@h:1"]
        {
            assert!(bad.parse::<Destination>().is_err(), "{bad}");
        }
    }

    #[test]
    fn destination_deserializes_from_string_or_table() {
        let a: Destination = serde_json::from_str("\"PACS@pacs.local:104\"").unwrap();
        let b: Destination = serde_json::from_str(r#"{"ae_title":"PACS","host":"pacs.local","port":104}"#).unwrap();
        assert_eq!(a, b);
        assert!(serde_json::from_str::<Destination>("\"nope\"").is_err());
        assert!(serde_json::from_str::<Destination>(r#"{"ae_title":"","host":"h","port":1}"#).is_err());
    }

    #[test]
    fn fragments_fit_the_peer_maximum_and_are_even() {
        assert_eq!(max_fragment_len(4096), Some(4084));
        assert_eq!(max_fragment_len(4097), Some(4084));
        assert_eq!(max_fragment_len(1018), Some(1006));
        assert_eq!(max_fragment_len(16384), Some(16372));
        assert_eq!(max_fragment_len(0), Some(SEND_PDU_CAP as usize - 12));
        assert_eq!(max_fragment_len(u32::MAX - 6), Some(SEND_PDU_CAP as usize - 12));
        assert_eq!(max_fragment_len(13), None);
        assert_eq!(max_fragment_len(14), Some(2));
        for max in [14u32, 100, 1018, 4096, 4097, 16384, 32768] {
            let frag = max_fragment_len(max).unwrap();
            assert_eq!(frag % 2, 0);
            let mut pdu = Vec::new();
            encode_pdata(&mut pdu, 1, PDataValueType::Data, false, &vec![0u8; frag]);
            assert!(pdu.len() <= max as usize, "{max}: {}", pdu.len());
        }
    }

    #[test]
    fn encoded_pdata_reads_back_with_dicom_ul() {
        for (value_type, is_last) in [
            (PDataValueType::Command, true),
            (PDataValueType::Command, false),
            (PDataValueType::Data, true),
            (PDataValueType::Data, false),
        ] {
            let mut out = Vec::new();
            encode_pdata(&mut out, 5, value_type.clone(), is_last, &[1, 2, 3, 4]);
            assert_eq!(out.len(), 6 + 6 + 4);
            let pdu = dicom_ul::read_pdu(&out[..], 16384, true).unwrap().unwrap();
            let Pdu::PData { data } = pdu else { panic!("not P-DATA-TF") };
            assert_eq!(data.len(), 1);
            assert_eq!(data[0].presentation_context_id, 5);
            assert_eq!(data[0].value_type, value_type);
            assert_eq!(data[0].is_last, is_last);
            assert_eq!(data[0].data, vec![1, 2, 3, 4]);
        }
    }

    #[test]
    fn contexts_are_deduplicated_and_uncompressed_ones_offer_both_vr() {
        let pairs = [
            (CT, uids::EXPLICIT_VR_LITTLE_ENDIAN),
            (CT, uids::JPEG_LOSSLESS_SV1),
            (CT, uids::EXPLICIT_VR_LITTLE_ENDIAN),
            (CT, uids::IMPLICIT_VR_LITTLE_ENDIAN),
        ];
        let contexts = propose_contexts(pairs);
        assert_eq!(contexts.len(), 3);
        assert_eq!(contexts[0].1, vec![uids::EXPLICIT_VR_LITTLE_ENDIAN, uids::IMPLICIT_VR_LITTLE_ENDIAN]);
        assert_eq!(contexts[1].1, vec![uids::JPEG_LOSSLESS_SV1]);
        assert_eq!(contexts[2].1, vec![uids::IMPLICIT_VR_LITTLE_ENDIAN, uids::EXPLICIT_VR_LITTLE_ENDIAN]);
        let many: Vec<String> = (0..200).map(|i| format!("1.2.3.{i}")).collect();
        assert_eq!(propose_contexts(many.iter().map(|s| (s.as_str(), uids::JPEG2000))).len(), 128);
    }

    #[test]
    fn names_for_messages() {
        assert_eq!(sop_class_name(CT), "CT Image Storage");
        assert_eq!(sop_class_name("1.2.3"), "1.2.3");
        assert!(transfer_syntax_name(uids::JPEG_LOSSLESS_SV1).starts_with("JPEG Lossless"));
        assert_eq!(transfer_syntax_name("1.2.3.4"), "1.2.3.4");
    }

    fn tiny_dataset(sop: &str) -> Vec<u8> {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(CT)));
        obj.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop)));
        obj.put(DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Doe^J")));
        obj.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(2u16)));
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(vec![1u8, 2, 3, 4, 5, 6, 7, 8])));
        let mut out = Vec::new();
        obj.write_dataset_with_ts(&mut out, &EXPLICIT_VR_LITTLE_ENDIAN.erased()).unwrap();
        out
    }

    fn part10(sop: &str, dataset: &[u8]) -> Vec<u8> {
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(CT)
            .media_storage_sop_instance_uid(sop)
            .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
            .build()
            .unwrap();
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        meta.write(&mut out).unwrap();
        out.extend_from_slice(dataset);
        out
    }

    #[test]
    fn part10_bytes_split_into_meta_and_dataset() {
        let ds = tiny_dataset("1.2.3.4");
        let file = part10("1.2.3.4", &ds);
        let inst = Instance::from_part10_bytes(&file).unwrap();
        assert_eq!(inst.sop_class_uid, CT);
        assert_eq!(inst.sop_instance_uid, "1.2.3.4");
        assert_eq!(inst.transfer_syntax_uid, uids::EXPLICIT_VR_LITTLE_ENDIAN);
        assert_eq!(inst.dataset, ds);
        // without preamble
        let inst = Instance::from_part10_bytes(&file[128..]).unwrap();
        assert_eq!(inst.dataset, ds);
        let dir = std::env::temp_dir().join(format!("scu-test-{}", std::process::id()));
        std::fs::write(&dir, &file).unwrap();
        let header = read_part10_header(&dir).unwrap();
        assert_eq!(header.dataset_offset as usize, file.len() - ds.len());
        assert_eq!(Instance::from_part10_file(&dir).unwrap(), Instance::from_part10_bytes(&file).unwrap());
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        let file = part10("1.2.3.4", &tiny_dataset("1.2.3.4"));
        assert!(matches!(Instance::from_part10_bytes(&[]), Err(InstanceError::NotPart10)));
        assert!(matches!(Instance::from_part10_bytes(&[0u8; 200]), Err(InstanceError::NotPart10)));
        assert!(matches!(Instance::from_part10_bytes(b"DICM"), Err(InstanceError::Meta(_))));
        for cut in [132, 140, 150, 180, 200] {
            assert!(Instance::from_part10_bytes(&file[..cut]).is_err(), "cut at {cut}");
        }
        let mut garbage = file.clone();
        garbage[140..150].copy_from_slice(&[0xff; 10]);
        assert!(Instance::from_part10_bytes(&garbage).is_err());
        assert!(matches!(Instance::from_part10_file("/nonexistent/x.dcm"), Err(InstanceError::Io(_))));
    }

    #[test]
    fn store_response_parses_and_mismatches_are_errors() {
        let req = command::Command {
            field: field::C_STORE_RQ,
            message_id: 9,
            affected_sop_class_uid: CT.into(),
            affected_sop_instance_uid: "1.2.3".into(),
            has_data_set: true,
        };
        let ok = command::encode_response(&req, &Outcome::success());
        assert_eq!(parse_store_response(&ok, 9), Ok((0, None)));
        let warn = command::encode_response(&req, &Outcome::with_comment(0xB007, "coerced"));
        assert_eq!(parse_store_response(&warn, 9), Ok((0xB007, Some("coerced".into()))));
        assert!(parse_store_response(&ok, 10).is_err());
        assert!(parse_store_response(&[1, 2, 3], 9).is_err());
        let echo = command::encode_response(&command::Command { field: field::C_ECHO_RQ, ..req }, &Outcome::success());
        assert!(parse_store_response(&echo, 9).is_err());
    }

    #[test]
    fn results_classify_warnings_as_success() {
        let r = |status| StoreResult { sop_instance_uid: "1".into(), status, comment: None, sent: true };
        for s in [0x0000, 0xB000, 0xB006, 0xB007] {
            assert!(r(s).is_success_or_warning(), "{s:04X}");
        }
        assert!(!r(0).is_warning());
        assert!(r(0xB006).is_warning());
        for s in [0xA700, 0xA900, 0xC000, 0x0122] {
            assert!(!r(s).is_success_or_warning(), "{s:04X}");
        }
    }

    #[test]
    fn uncompressed_data_sets_convert_between_vr_encodings() {
        let ds = tiny_dataset("1.2.3.4");
        let implicit = convert(&ds, uids::EXPLICIT_VR_LITTLE_ENDIAN, uids::IMPLICIT_VR_LITTLE_ENDIAN).unwrap();
        assert_ne!(implicit, ds);
        let back = convert(&implicit, uids::IMPLICIT_VR_LITTLE_ENDIAN, uids::EXPLICIT_VR_LITTLE_ENDIAN).unwrap();
        let obj = InMemDicomObject::read_dataset_with_ts(&back[..], &EXPLICIT_VR_LITTLE_ENDIAN.erased()).unwrap();
        assert_eq!(obj.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().as_ref(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(convert(&[0xff; 9], uids::EXPLICIT_VR_LITTLE_ENDIAN, uids::IMPLICIT_VR_LITTLE_ENDIAN).is_err());
    }

    mod against_our_scp {
        use super::*;
        use crate::scp::{InstanceStore, PendingInstance, ScpConfig, StoreRequest, StoreScp};
        use std::sync::{Arc, Mutex};
        use tokio_util::sync::CancellationToken;

        /// Keeps every received instance in memory; answers the status given per SOP Instance
        /// UID prefix ("warn." -> B007, "fail." -> A700).
        #[derive(Default)]
        struct MemStore {
            received: Mutex<Vec<(StoreRequest, Vec<u8>)>>,
        }

        struct Pending {
            store: Arc<MemStore>,
            request: StoreRequest,
            bytes: Vec<u8>,
        }

        impl InstanceStore for Arc<MemStore> {
            type Pending = Pending;
            async fn begin(&self, request: &StoreRequest) -> Result<Pending, Outcome> {
                Ok(Pending { store: self.clone(), request: request.clone(), bytes: Vec::new() })
            }
        }

        impl PendingInstance for Pending {
            async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
                self.bytes.extend_from_slice(bytes);
                Ok(())
            }
            async fn commit(self) -> Outcome {
                let status = if self.request.sop_instance_uid.starts_with("7.") {
                    Outcome::with_comment(0xB007, "coerced")
                } else if self.request.sop_instance_uid.starts_with("9.") {
                    Outcome::with_comment(0xA700, "disk full")
                } else {
                    Outcome::success()
                };
                self.store.received.lock().unwrap().push((self.request, self.bytes));
                status
            }
        }

        async fn start(max_pdu: u32) -> (std::net::SocketAddr, Arc<MemStore>, CancellationToken) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let store = Arc::new(MemStore::default());
            let config = ScpConfig { ae_title: "OURSCP".into(), max_pdu_length: max_pdu, ..ScpConfig::default() };
            let scp = StoreScp::new(config, Arc::new(store.clone()));
            let token = CancellationToken::new();
            tokio::spawn(scp.serve(listener, token.clone()));
            (addr, store, token)
        }

        fn instance(sop: &str, dataset: Vec<u8>, ts: &str) -> Instance {
            Instance { sop_class_uid: CT.into(), sop_instance_uid: sop.into(), transfer_syntax_uid: ts.into(), dataset }
        }

        #[tokio::test]
        async fn sends_fragments_and_reads_statuses() {
            let (addr, store, token) = start(4096).await;
            let dest =
                Destination { ae_title: "OURSCP".into(), host: "127.0.0.1".into(), port: addr.port(), tls: None };
            let big: Vec<u8> = tiny_dataset("1.1").into_iter().chain((0..20_000u32).map(|i| i as u8)).collect();
            let instances = vec![
                instance("1.1", big.clone(), uids::EXPLICIT_VR_LITTLE_ENDIAN),
                instance("7.1", tiny_dataset("7.1"), uids::EXPLICIT_VR_LITTLE_ENDIAN),
                instance("9.1", tiny_dataset("9.1"), uids::EXPLICIT_VR_LITTLE_ENDIAN),
                // a context our SCP refuses (JPEG Extended): answered locally, others still go
                instance("1.2", vec![0; 10], uids::JPEG_EXTENDED12_BIT),
            ];
            let mut seen = 0;
            let results = store_all(&dest, &ScuConfig::default(), instances, |_| seen += 1).await.unwrap();
            token.cancel();
            assert_eq!(seen, 4);
            assert_eq!(results.iter().map(|r| r.status).collect::<Vec<_>>(), vec![0, 0xB007, 0xA700, 0x0122]);
            assert!(results[1].is_success_or_warning() && !results[2].is_success_or_warning());
            assert_eq!(results[2].comment.as_deref(), Some("disk full"));
            assert!(!results[3].sent);
            let comment = results[3].comment.as_deref().unwrap();
            assert!(comment.contains("CT Image Storage") && comment.contains("JPEG Extended"), "{comment}");
            let received = store.received.lock().unwrap();
            assert_eq!(received.len(), 3);
            assert_eq!(received[0].1, big);
            assert_eq!(received[0].0.transfer_syntax_uid, uids::EXPLICIT_VR_LITTLE_ENDIAN);
        }

        #[tokio::test]
        async fn wrong_called_ae_title_is_rejected_with_reason() {
            let (addr, _store, token) = start(16384).await;
            let dest =
                Destination { ae_title: "NOTOURS".into(), host: "127.0.0.1".into(), port: addr.port(), tls: None };
            let err = store_all(
                &dest,
                &ScuConfig::default(),
                vec![instance("1.1", tiny_dataset("1.1"), uids::EXPLICIT_VR_LITTLE_ENDIAN)],
                |_| {},
            )
            .await
            .unwrap_err();
            token.cancel();
            match err {
                ScuError::Rejected { result, rj_source, reason, .. } => {
                    assert_eq!((result, rj_source, reason), (1, 1, 7))
                }
                other => panic!("expected rejection, got {other}"),
            }
        }

        #[tokio::test]
        async fn nothing_to_send_does_not_connect() {
            let dest = Destination { ae_title: "X".into(), host: "127.0.0.1".into(), port: 9, tls: None };
            assert!(store_all(&dest, &ScuConfig::default(), Vec::new(), |_| {}).await.unwrap().is_empty());
        }

        #[tokio::test]
        async fn silent_peer_times_out() {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let hold = tokio::spawn(async move {
                let conn = listener.accept().await;
                tokio::time::sleep(Duration::from_secs(10)).await;
                drop(conn);
            });
            let dest = Destination { ae_title: "SILENT".into(), host: "127.0.0.1".into(), port, tls: None };
            let config = ScuConfig { connect_timeout: Duration::from_millis(500), ..ScuConfig::default() };
            let started = std::time::Instant::now();
            let err =
                store_all(&dest, &config, vec![instance("1.1", vec![0; 4], uids::EXPLICIT_VR_LITTLE_ENDIAN)], |_| {})
                    .await
                    .unwrap_err();
            assert!(matches!(err, ScuError::Timeout { .. }), "{err}");
            assert!(started.elapsed() < Duration::from_secs(3));
            hold.abort();
        }
    }
}
