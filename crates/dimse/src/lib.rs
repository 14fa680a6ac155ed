//! DIMSE networking for firstread.
//!
//! - [`scp`]: the Store SCP (C-ECHO, C-STORE) on dicom-ul's async associations, streaming each
//!   instance into an [`scp::InstanceStore`] supplied by the application.
//! - [`negotiation`]: which AE titles, abstract syntaxes and transfer syntaxes are accepted.
//! - [`command`]: DIMSE command sets and status codes (PS3.7).
//!
//! This crate knows nothing about files or databases.

pub mod command;
pub mod negotiation;
pub mod scp;
pub mod storage_classes;

pub use command::{Command, Outcome};
pub use negotiation::AllowedPeer;
pub use scp::{AssociationInfo, Ending, InstanceStore, PendingInstance, ScpConfig, StoreRequest, StoreScp};
