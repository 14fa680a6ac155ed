//! DIMSE networking for firstread.
//!
//! - [`scp`]: the Store SCP (C-ECHO, C-STORE) on dicom-ul's async associations, streaming each
//!   instance into an [`scp::InstanceStore`] supplied by the application.
//! - [`negotiation`]: which AE titles, abstract syntaxes and transfer syntaxes are accepted.
//! - [`command`]: DIMSE command sets and status codes (PS3.7).
//! - [`scu`]: the Storage SCU: C-STORE of many instances over one association (PS3.7 9.1.1).
//! - DICOM TLS (PS3.15 B.9, BCP 195) for both: [`StoreScp::serve_tls`], [`Destination::tls`], with
//!   the configurations of `firstread-tls`.
//!
//! This crate knows nothing about files or databases.

pub mod command;
pub mod negotiation;
pub mod scp;
pub mod scu;
pub mod storage_classes;

pub use command::{Command, Outcome};
pub use firstread_tls::{ClientTlsFiles, ServerTls, ServerTlsFiles, TlsError};
pub use negotiation::{AllowedPeer, Refusal};
pub use scp::{AssociationInfo, Ending, InstanceStore, PendingInstance, ScpConfig, StoreRequest, StoreScp};
pub use scu::{store_all, Destination, Instance, ScuConfig, ScuError, StoreResult, StoreScu};
