//! Durable storage of received instances and their PostgreSQL index.
//!
//! - [`storage`]: Part 10 files streamed to a temporary file, fsync'd and linked into a
//!   study/series/instance layout under the storage root.
//! - [`attributes`]: lenient extraction of the indexed attributes from a received data set.
//! - [`candidate`]: which instances and series can become the analysed volume (shared by the
//!   volume builder and study assembly).
//! - [`metadata`]: the DICOM JSON metadata kept in the index for DICOMweb.
//! - [`index`]: the study/series/instance tables (migrations in `schemas/`).
//! - [`disk`]: the disk guard (watermarks of the storage filesystem).
//!
//! The invariant this crate serves: an instance is acknowledged only after its file is durable
//! and its index row committed.

pub mod attributes;
pub mod candidate;
pub mod charset;
pub mod disk;
pub mod index;
pub mod metadata;
pub mod storage;

pub use attributes::InstanceAttributes;
pub use disk::{DiskGuard, DiskState, Watermarks};
pub use index::{Arrival, Index, Provenance, Recorded};
pub use storage::{Announced, Placed, Received, Storage, StorageError};
