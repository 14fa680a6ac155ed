//! Why a study yields no volume: every failure of the builder is one of these, with the numbers
//! (mm, degrees, counts) a reader needs to understand it. Nothing read from a file panics.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::selection::SeriesDecision;

/// A refusal to build a volume, with a human-readable reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// No series of the study is an original axial CT image series; `decisions` says why for each.
    #[error("no suitable CT series in the study: {}", summarise(decisions))]
    NoSuitableSeries {
        /// One decision per series of the study.
        decisions: Vec<SeriesDecision>,
    },
    /// The chosen series has fewer slices than the contract's `min_slices`.
    #[error("series {series_instance_uid} has {found} slice(s) after duplicates were dropped; at least {required} are required")]
    TooFewSlices {
        /// Series Instance UID (0020,000E).
        series_instance_uid: String,
        /// Distinct slice positions found.
        found: usize,
        /// The contract's minimum.
        required: usize,
    },
    /// Neighbouring slices are more than 1.5 x the median spacing apart: slices are missing.
    #[error("missing slices: a gap of {gap_mm:.2} mm above the slice at {at_mm:.2} mm along the slice normal, where the median slice spacing is {median_spacing_mm:.2} mm")]
    MissingSlices {
        /// Distance between the two slices around the gap, mm.
        gap_mm: f64,
        /// Median distance between neighbouring slices, mm.
        median_spacing_mm: f64,
        /// Position of the slice below the gap along the (superior-pointing) slice normal, mm
        /// (the LPS z for an axial series).
        at_mm: f64,
    },
    /// The slices are not stacked perpendicular to the image plane: Gantry/Detector Tilt (0018,1120)
    /// or the slice positions (their in-plane drift) exceed the contract's maximum.
    #[error("gantry tilt of {degrees:.2} degrees: slices are not stacked perpendicular to the image plane")]
    GantryTilt {
        /// The tilt in degrees (attribute value or angle of the position step off the normal).
        degrees: f64,
    },
    /// Slice spacings differ by more than the contract's relative tolerance.
    #[error("non-uniform slice spacing: from {min_mm:.3} mm to {max_mm:.3} mm (median {median_mm:.3} mm), more than {:.0} % apart", tolerance * 100.0)]
    NonUniformSpacing {
        /// Smallest spacing between neighbouring slices, mm.
        min_mm: f64,
        /// Largest spacing between neighbouring slices, mm.
        max_mm: f64,
        /// Median spacing, mm.
        median_mm: f64,
        /// The contract's tolerance (fraction of the median).
        tolerance: f64,
    },
    /// The series has more voxels than the contract accepts ([`crate::VolumeContract::max_voxels`]).
    #[error("series {series_instance_uid} has {slices} x {rows} x {cols} = {voxels} voxels, more than the {max_voxels} accepted")]
    TooLarge {
        /// Series Instance UID (0020,000E).
        series_instance_uid: String,
        /// Slices, rows and columns.
        slices: usize,
        /// Rows (0028,0010).
        rows: usize,
        /// Columns (0028,0011).
        cols: usize,
        /// Their product.
        voxels: usize,
        /// The contract's maximum.
        max_voxels: usize,
    },
    /// The slice spacing exceeds the contract's maximum.
    #[error("slice spacing {spacing_mm:.2} mm is larger than the {max_mm:.2} mm accepted")]
    SpacingTooLarge {
        /// Median slice spacing, mm.
        spacing_mm: f64,
        /// The contract's maximum, mm.
        max_mm: f64,
    },
    /// Image Orientation (Patient) (0020,0037) is not axial within 0.1 rad (about 5.7 degrees).
    #[error(
        "series is {plane}, not axial: Image Orientation (Patient) rows {row_cosines:?}, columns {column_cosines:?}"
    )]
    NotAxial {
        /// "coronal", "sagittal", "oblique (N degrees from axial)" or "transposed axial".
        plane: String,
        /// Row direction cosines (LPS), the first three values of (0020,0037).
        row_cosines: [f64; 3],
        /// Column direction cosines (LPS), the last three values of (0020,0037).
        column_cosines: [f64; 3],
    },
    /// Slices of the series disagree on Rows, Columns, Pixel Spacing, orientation or frame of
    /// reference, or lack one of them.
    #[error("inconsistent geometry: {0}")]
    InconsistentGeometry(String),
    /// The pixel data of an instance could not be decoded into Hounsfield units.
    #[error("cannot decode the pixel data of instance {sop_instance_uid}: {message}")]
    Decode {
        /// SOP Instance UID (0008,0018) of the instance.
        sop_instance_uid: String,
        /// What failed.
        message: String,
    },
    /// A file could not be read or parsed as a DICOM Part 10 file.
    #[error("cannot read {}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

fn summarise(decisions: &[SeriesDecision]) -> String {
    if decisions.is_empty() {
        return "no files".to_owned();
    }
    let mut out = String::new();
    for (i, d) in decisions.iter().enumerate() {
        let sep = if i == 0 { "" } else { "; " };
        let description = d.series_description.as_deref().map(|s| format!(" ({s})")).unwrap_or_default();
        let _ = write!(out, "{sep}series {}{description}: {}", d.series_instance_uid, d.reason);
    }
    out
}
