//! CT volume builder of the inference worker.
//!
//! From the files of one study, [`build_study_volume`] chooses the series to analyse and builds a
//! Hounsfield-unit [`Volume`] in the canonical orientation the model expects (axis 0 inferior ->
//! superior, axis 1 anterior -> posterior, axis 2 patient right -> left), or refuses with a
//! [`Refusal`] that names the numbers (mm, degrees, counts) behind it. Every series gets a
//! [`SeriesDecision`] saying why it was chosen or skipped.
//!
//! # Rules and their reasons
//!
//! Series selection (PS3.3 C.7.3.1 General Series, C.8.2.1 CT Image):
//! - Only headers are read (up to Pixel Data) to choose: a study may hold thousands of images of
//!   series that are never used.
//! - Only CT Image Storage instances with Modality CT and Image Type ORIGINAL\PRIMARY count;
//!   localizers/scouts (projections), DERIVED/SECONDARY images (reformats, MIPs), dose reports,
//!   secondary captures and SR are skipped with a recorded reason. Enhanced CT (multi-frame) is
//!   refused as "not supported yet".
//! - Preference: full z-coverage (within 90 % of the longest), then thinner slices, then a soft
//!   reconstruction kernel (quantitative HU thresholds suffer from sharp-kernel noise; see
//!   [`kernel`]), then more slices, then the lowest Series Instance UID (file order never matters).
//!
//! Geometry (PS3.3 C.7.6.2 Image Plane module):
//! - One grid: Rows, Columns, Pixel Spacing, Image Orientation (Patient) and Frame of Reference
//!   must agree within the series, else [`Refusal::InconsistentGeometry`].
//! - Axial only (cosines within 0.1 rad of ±x / ±y), so canonical orientation is reached by flips,
//!   without resampling; other planes get [`Refusal::NotAxial`].
//! - Slices are sorted by Image Position (Patient) along the slice normal, never by Instance Number
//!   (numbering direction is vendor-specific). Spacing is the median position difference, never
//!   Slice Thickness (overlapping reconstructions). Duplicates (within 0.01 mm) are dropped with a
//!   warning, keeping the lowest Instance Number.
//! - A difference above 1.5 x the median is [`Refusal::MissingSlices`]; a spread beyond the
//!   contract's tolerance [`Refusal::NonUniformSpacing`]; above the maximum
//!   [`Refusal::SpacingTooLarge`]; too few slices [`Refusal::TooFewSlices`].
//! - Gantry tilt (attribute or sheared positions) is [`Refusal::GantryTilt`]: a tilted stack is
//!   not a rectilinear volume.
//!
//! Pixels (PS3.3 C.7.6.3 Image Pixel, C.11.1 Modality LUT, C.7.5.1.1.2 Pixel Padding Value):
//! - Decoded with dicom-pixeldata for every transfer syntax the node accepts; stored values are
//!   masked to Bits Stored and sign-extended by Pixel Representation.
//! - HU = stored x Rescale Slope + Rescale Intercept, per slice; missing values act as 1/0 with a
//!   warning.
//! - Pixel Padding Value (and Range Limit) voxels become `padding_hu`, the value read by Pixel
//!   Representation whatever VR (US, SS, UN) the file used.
//! - Slices are decoded in parallel on std threads.
//!
//! Peer input never panics: every failure is a [`Refusal`].

mod contract;
mod error;
mod geometry;
mod header;
pub mod kernel;
pub mod parallel;
mod pixels;
pub mod prefetch;
mod selection;
mod volume;

use std::path::PathBuf;

pub use contract::VolumeContract;
pub use error::Refusal;
pub use prefetch::{Prefetcher, SliceCache};
pub use selection::SeriesDecision;
pub use volume::{SourceSlice, StudyVolume, Volume};

/// Chooses the series of a study to analyse and builds its canonical HU volume.
///
/// `files` are the Part 10 files of one study, in any order. Headers of all files are read (in
/// parallel), the series is chosen by the rules of the crate doc, then its slices are decoded.
///
/// # Errors
/// A [`Refusal`]: [`Refusal::Io`] for an unreadable file, [`Refusal::NoSuitableSeries`] when no
/// series holds original CT images, the geometry refusal of the most promising series when none
/// meets the contract, or [`Refusal::Decode`] when a slice of the chosen series cannot be decoded.
pub fn build_study_volume(files: &[PathBuf], contract: &VolumeContract) -> Result<StudyVolume, Refusal> {
    build_study_volume_with(files, contract, None)
}

/// [`build_study_volume`], taking the headers and decoded slices `cache` holds for these files
/// ([`prefetch`]: decoded while the study arrived) instead of reading them again. The volume is
/// the same with or without the cache.
///
/// # Errors
/// As [`build_study_volume`].
pub fn build_study_volume_with(
    files: &[PathBuf],
    contract: &VolumeContract,
    cache: Option<&SliceCache>,
) -> Result<StudyVolume, Refusal> {
    let headers = map_headers(files, cache)?;
    let selection = selection::select_series(headers, contract)?;
    let volume = volume::assemble_volume(selection.plan, contract, cache)?;
    Ok(StudyVolume { volume, decisions: selection.decisions })
}

fn map_headers(files: &[PathBuf], cache: Option<&SliceCache>) -> Result<Vec<header::InstanceHeader>, Refusal> {
    parallel::map_in_parallel(files.iter().collect(), |path| match cache.and_then(|c| c.header(path)) {
        Some(h) => Ok(h),
        None => header::read_header(path),
    })
    .into_iter()
    .collect()
}
