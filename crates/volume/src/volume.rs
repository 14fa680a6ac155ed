//! The canonical Hounsfield-unit volume and its geometry in patient coordinates.
//!
//! Canonical orientation (what the model expects, see `models/covid19-lung-ct/0.2.1/export.py`):
//! axis 0 = slices from inferior to superior (increasing LPS z), axis 1 = anterior to posterior
//! (increasing y), axis 2 = patient right to left (increasing x). Voxel centres are the pixel
//! centres of the source images (PS3.3 C.7.6.2.1.1: Image Position (Patient) is the centre of the
//! first transmitted pixel), so no resampling happens: only slice order and in-plane flips.

use std::path::PathBuf;

use crate::contract::VolumeContract;
use crate::error::Refusal;
use crate::geometry::{scale, SeriesPlan};
use crate::header::InstanceHeader;
use crate::parallel::map_in_parallel;
use crate::pixels::{decode_slice_hu, SliceNotes, SliceTarget};
use crate::prefetch::SliceCache;
use crate::selection::SeriesDecision;

/// Most voxels a volume may hold (2^31, 8 GiB of f32): larger headers are not a CT series.
pub(crate) const MAX_VOXELS: usize = 1 << 31;

/// The volume built for a study and the decision made for each of its series.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyVolume {
    /// The volume of the chosen series.
    pub volume: Volume,
    /// One decision per series, the chosen one first.
    pub decisions: Vec<SeriesDecision>,
}

/// One source image of the volume (one canonical slice).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSlice {
    /// SOP Class UID (0008,0016).
    pub sop_class_uid: String,
    /// SOP Instance UID (0008,0018).
    pub sop_instance_uid: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// Its Image Position (Patient) (0020,0032): LPS x, y, z in mm of its first pixel's centre.
    pub position_mm: [f64; 3],
    /// Instance Number (0020,0013).
    pub instance_number: Option<i32>,
}

/// A CT volume in Hounsfield units, in the canonical orientation of the module doc.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// HU, row-major `[slices, rows, cols]` (index with [`Volume::index`]).
    pub hu: Vec<f32>,
    /// `[slices, rows, cols]`.
    pub shape: [usize; 3],
    /// `[slice, row, col]` spacing in mm: the median distance between Image Positions along the
    /// normal, Pixel Spacing (0028,0030) value 1 (between rows), Pixel Spacing value 2 (between columns).
    pub spacing_mm: [f64; 3],
    /// LPS position (mm) of the centre of voxel `[0, 0, 0]`.
    pub origin_mm: [f64; 3],
    /// LPS unit direction of increasing index along axis 0 (slice normal, superior), 1 (the
    /// column cosines, made to point posterior) and 2 (the row cosines, made to point left).
    pub axes: [[f64; 3]; 3],
    /// One per canonical slice `k`, in canonical order.
    pub slices: Vec<SourceSlice>,
    /// Canonical row `r` is source row `rows - 1 - r` (source column cosines point anterior).
    pub flip_rows: bool,
    /// Canonical column `c` is source column `cols - 1 - c` (source row cosines point right).
    pub flip_cols: bool,
    /// Study Instance UID (0020,000D).
    pub study_instance_uid: String,
    /// Series Instance UID (0020,000E).
    pub series_instance_uid: String,
    /// Frame of Reference UID (0020,0052).
    pub frame_of_reference_uid: Option<String>,
    /// Patient Position (0018,5100) of the series' first slice (HFS, FFP, HFDR, ...; PS3.3
    /// C.7.3.1.1.2), as sent; `None` when absent.
    pub patient_position: Option<String>,
    /// What was assumed or dropped on the way (missing rescale, duplicates, ignored instances).
    pub warnings: Vec<String>,
}

impl Volume {
    /// Offset of voxel `(k, r, c)` (slice, row, column) in [`Volume::hu`].
    pub fn index(&self, k: usize, r: usize, c: usize) -> usize {
        (k * self.shape[1] + r) * self.shape[2] + c
    }

    /// Volume of one voxel in millilitres (cm³): the product of `spacing_mm` / 1000.
    pub fn voxel_volume_ml(&self) -> f64 {
        self.spacing_mm.iter().product::<f64>() / 1000.0
    }

    /// LPS position in mm of the canonical (fractional) index `(k, r, c)`.
    pub fn to_patient(&self, k: f64, r: f64, c: f64) -> [f64; 3] {
        let mut p = self.origin_mm;
        for (axis, steps) in [k, r, c].into_iter().enumerate() {
            let d = scale(self.axes[axis], steps * self.spacing_mm[axis]);
            for i in 0..3 {
                p[i] += d[i];
            }
        }
        p
    }

    /// The source image's `(row, column)` of canonical `(r, c)` (same slice).
    pub fn source_pixel(&self, r: usize, c: usize) -> (usize, usize) {
        let row = if self.flip_rows { self.shape[1] - 1 - r } else { r };
        let col = if self.flip_cols { self.shape[2] - 1 - c } else { c };
        (row, col)
    }
}

/// Decodes every slice of `plan` into the canonical volume.
///
/// # Errors
/// The first [`Refusal`] of any slice (in canonical order), or `InconsistentGeometry` when the
/// grid is absurdly large.
pub(crate) fn assemble_volume(
    plan: SeriesPlan,
    contract: &VolumeContract,
    cache: Option<&SliceCache>,
) -> Result<Volume, Refusal> {
    let (rows, cols, n) = (plan.grid.rows, plan.grid.cols, plan.slices.len());
    let slice_len = rows.checked_mul(cols).filter(|&l| l > 0);
    let Some(slice_len) = slice_len.filter(|l| l.checked_mul(n).is_some_and(|v| v <= MAX_VOXELS)) else {
        return Err(Refusal::InconsistentGeometry(format!("{n} slices of {rows}x{cols} pixels is too large a volume")));
    };
    let mut hu = vec![0f32; slice_len * n];
    let target = SliceTarget { grid: &plan.grid, frame: &plan.frame, padding_hu: contract.padding_hu };
    let jobs: Vec<(&InstanceHeader, &mut [f32])> = plan.slices.iter().zip(hu.chunks_exact_mut(slice_len)).collect();
    let results = map_in_parallel(jobs, |(header, out)| {
        // a slice decoded while the study arrived, for this same grid, flips and padding
        match cache.and_then(|c| c.take_pixels(&header.path, |p| p.fit(&target))) {
            Some(p) => {
                out.copy_from_slice(&p.hu);
                Ok(p.notes)
            }
            None => decode_slice_hu(header, &target, out),
        }
    });
    let mut notes = Vec::with_capacity(n);
    for result in results {
        notes.push(result?);
    }
    let mut warnings = plan.warnings.clone();
    warnings.extend(slice_warnings(&notes));
    Ok(Volume {
        hu,
        shape: [n, rows, cols],
        spacing_mm: [plan.spacing_mm, plan.grid.pixel_spacing[0], plan.grid.pixel_spacing[1]],
        origin_mm: origin(&plan),
        axes: axes(&plan),
        slices: plan.slices.iter().map(source_slice).collect(),
        flip_rows: plan.frame.flip_rows,
        flip_cols: plan.frame.flip_cols,
        study_instance_uid: plan.slices.first().map(|s| s.attrs.study_instance_uid.clone()).unwrap_or_default(),
        series_instance_uid: plan.series_instance_uid.clone(),
        frame_of_reference_uid: plan.grid.frame_of_reference_uid.clone(),
        patient_position: plan.slices.first().and_then(|s| s.attrs.patient_position.clone()),
        warnings,
    })
}

fn slice_warnings(notes: &[SliceNotes]) -> Vec<String> {
    let mut out = Vec::new();
    let missing = notes.iter().filter(|n| n.rescale_missing).count();
    if missing > 0 {
        out.push(format!(
            "Rescale Slope/Intercept missing in {missing} of {} slices: 1/0 assumed (HU = stored value)",
            notes.len()
        ));
    }
    out.extend(notes.iter().flat_map(|n| n.other.iter().cloned()));
    out
}

/// Canonical axes: the superior slice normal, then the column and row cosines flipped as needed.
fn axes(plan: &SeriesPlan) -> [[f64; 3]; 3] {
    let sign = |flip: bool| if flip { -1.0 } else { 1.0 };
    [
        plan.frame.normal,
        scale(plan.grid.col_cosines, sign(plan.frame.flip_rows)),
        scale(plan.grid.row_cosines, sign(plan.frame.flip_cols)),
    ]
}

/// Centre of canonical voxel [0, 0, 0]: the first slice's Image Position plus the in-plane offset
/// of the source pixel that lands there.
fn origin(plan: &SeriesPlan) -> [f64; 3] {
    let Some(first) = plan.slices.first().and_then(InstanceHeader::position) else { return [0.0; 3] };
    let row = if plan.frame.flip_rows { plan.grid.rows - 1 } else { 0 } as f64;
    let col = if plan.frame.flip_cols { plan.grid.cols - 1 } else { 0 } as f64;
    let down = scale(plan.grid.col_cosines, row * plan.grid.pixel_spacing[0]);
    let across = scale(plan.grid.row_cosines, col * plan.grid.pixel_spacing[1]);
    [first[0] + down[0] + across[0], first[1] + down[1] + across[1], first[2] + down[2] + across[2]]
}

fn source_slice(h: &InstanceHeader) -> SourceSlice {
    SourceSlice {
        sop_class_uid: h.attrs.sop_class_uid.clone(),
        sop_instance_uid: h.attrs.sop_instance_uid.clone(),
        path: h.path.clone(),
        position_mm: h.position().unwrap_or_default(),
        instance_number: h.attrs.instance_number,
    }
}
