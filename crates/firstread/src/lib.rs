//! firstread: a DICOM node that gives chest CT studies a first read.
//!
//! This crate wires the concept crates together (see `docs/ARCHITECTURE.md`):
//! [`config`] (TOML + environment), [`telemetry`] (tracing), [`ingest`] (Store SCP -> storage
//! -> index) and [`node`] (start/stop a node); [`http`] serves DICOMweb, [`http_audit`] records its
//! accesses in the audit trail; [`retention`] purges old received images; [`models`] says which
//! model versions run (active and shadow) and compares two; [`demo`] runs the whole
//! path on the bundled sample CT. The `firstread` binary is `src/main.rs`.

pub mod analysis;
pub mod bench;
pub mod config;
pub mod demo;
pub mod export;
pub mod http;
pub mod http_audit;
pub mod ingest;
pub mod models;
pub mod node;
pub mod notify;
pub mod results;
pub mod retention;
pub mod send;
pub mod status;
pub mod telemetry;

pub use config::Config;
pub use node::{Node, Roles};
