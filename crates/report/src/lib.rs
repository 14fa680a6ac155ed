//! The DICOM result objects of a first read, each in its own new series of the source study:
//!
//! - [`sr`]: Comprehensive 3D SR, PS3.16 TID 1500 Imaging Measurement Report;
//! - [`seg`]: Segmentation IOD (PS3.3 A.51) of the model's output channels;
//! - [`sc`]: Secondary Capture (PS3.3 A.8) key images for viewers without SR/SEG support.
//!
//! UIDs are derived deterministically from (Study Instance UID, model, model version, study
//! version) ([`uids`]), so a retried job produces the same objects with the same UIDs, and the
//! Patient and General Study modules are copied from the source ([`source`]); every object
//! starts from the same SOP Common and General Series header (`dataset`).

pub mod contour;
mod dataset;
pub mod sc;
pub mod seg;
pub mod source;
pub mod sr;
pub mod uids;

pub use source::SourceStudy;
pub use uids::ResultUids;

/// Everything a result object is built from.
pub struct ResultInput<'a> {
    /// The analysed volume (canonical orientation) and its source slices.
    pub volume: &'a firstread_volume::Volume,
    /// Model output masks by channel, `[slices, rows, cols]` each.
    pub segmentation: &'a firstread_inference::Segmentation,
    /// The findings of the model's extension (`None`: a model with its vocabulary only).
    pub findings: Option<&'a firstread_findings::Findings>,
    /// The measurements and classes of the manifest's vocabulary.
    pub measures: &'a firstread_findings::measures::Measures,
    /// The model package manifest (name, version, output labels and codes, method).
    pub manifest: &'a firstread_inference::Manifest,
    /// Patient/study attributes of the source study.
    pub source: &'a SourceStudy,
    /// The UIDs of this result set.
    pub uids: &'a ResultUids,
    /// Study version analysed (1 = first analysis).
    pub study_version: i32,
    /// The SR this one supersedes (SOP Class UID, SOP Instance UID, Series Instance UID), if any.
    pub predecessor_sr: Option<(String, String, String)>,
    /// Content Date/Time to write (DA "YYYYMMDD", TM "HHMMSS"): fixed per result set so that a
    /// retried job writes byte-identical objects.
    pub content_date: String,
    /// See `content_date`.
    pub content_time: String,
}

/// Result object errors.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The source could not be read.
    #[error("reading the source: {0}")]
    Source(String),
    /// Building or writing an object failed.
    #[error("writing {what}: {message}")]
    Write {
        /// Which object.
        what: &'static str,
        /// Why.
        message: String,
    },
}
