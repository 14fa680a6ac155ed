//! The pleural cavity: dense dependent lung kept in the lung masks, pleural effusion told apart.
//!
//! The model's lung masks hold aerated lung and what it encloses. Consolidated lung has the
//! density of the chest wall, so a consolidation lying along the chest wall is outside them,
//! and the more severe the disease, the more is missed. The lung is the content of the pleural
//! cavity, not its air: this step finds the cavity's outer wall, the inner surface of the rib
//! cage, and takes what lies between the aerated lung and that wall.
//!
//! Method, per slice and per lung (after Prasad et al., "Automatic segmentation of lung
//! parenchyma in the presence of diseases based on curvature of ribs", Acad Radiol
//! 2008;15(9):1173-1180, who bound diseased lung by the rib cage, here with rays from the lung
//! rather than a fitted curve):
//!
//! 1. Rays every 1 degree from the lung's centroid in the slice. Along each ray: where the lung
//!    ends (the end of the last lung run of at least [`MIN_LUNG_RUN_MM`]: air bronchograms are
//!    shorter), the first bone beyond it (>= [`BONE_HU`]) and the first fat beyond it
//!    (-180..-40 HU over [`FAT_STOP_MM`]: extrapleural and mediastinal fat).
//! 2. The rib cage: bone hits at least [`RIB_MIN_LATERAL_MM`] from the midline (ribs, not the
//!    spine, the sternum or a contrast-filled aorta), hits that break the cage's smoothness
//!    ([`CAGE_SLOPE`]: farther than a nearer hit within 30 degrees allows; the scapula seen
//!    through an intercostal space) dropped, then interpolated over the
//!    intercostal spaces between neighbouring hits at most [`MAX_RIB_GAP_DEG`] apart.
//! 3. Fill: on dependent rays (pointing posteriorly, [`DEPENDENT_MIN_SIN`]), the voxels between
//!    where the lung ends and [`WALL_MARGIN_MM`] inside the rib cage (parietal pleura and the
//!    innermost intercostal muscle), never bone, never fat beyond the lung's partial-volume
//!    rim, never within [`MEDIAL_EXCLUSION_MM`] of the midline (spine, aorta, oesophagus), at
//!    most [`MAX_DEPTH_MM`] deep. An in-plane opening removes the rims a normal lung leaves, and
//!    what no longer touches the lung lies beyond the wall and is dropped.
//!    Anterior and medial rays are not filled: there the lung borders the heart and the
//!    mediastinum, which no density rule tells apart from consolidation.
//! 4. Each 3-D connected region of filled voxels, with the dense (> -300 HU) model opacity
//!    touching it, is called:
//!    - consolidation when at least [`AIR_BRONCHOGRAM_MIN`] of it is air (air bronchograms,
//!      counted in the region and the holes it encloses in-plane): lung and opacity;
//!    - pleural effusion when it holds no air (< [`EFFUSION_MAX_AIR`]) and its median above
//!      -100 HU is at most [`EFFUSION_MAX_HU`] (fluid, 0-20 HU): neither lung nor opacity,
//!      reported on its own;
//!    - indeterminate otherwise (e.g. denser fluid, atelectasis without air bronchograms, an
//!      effusion with consolidation against it): counted as lung and opacity, and reported as
//!      "dense dependent region: effusion or consolidation".
//!
//! What it cannot do (see the model README): a lung with no aerated part in a slice has no rays
//! there (a completely white lung, or the bottom of a consolidated base below the last aerated
//! slice); anterior and paramediastinal dense disease is left to the model; the dependent side
//! is posterior (supine patients).

use serde::Serialize;

/// Bone (HU, after denoising): ribs, spine, sternum.
pub const BONE_HU: f32 = 200.0;
/// Fat band (HU).
pub const FAT_HU: [f32; 2] = [-180.0, -40.0];
/// A lung run along a ray shorter than this (mm) is an air bronchogram, not the lung's edge.
pub const MIN_LUNG_RUN_MM: f64 = 10.0;
/// Fat over this length (mm) beyond the lung's partial-volume rim stops a ray's fill.
pub const FAT_STOP_MM: f64 = 2.0;
/// Partial-volume rim beyond the lung's edge where fat-like HU do not stop the fill (mm).
pub const PARTIAL_VOLUME_MM: f64 = 1.5;
/// Bone hits closer than this to the midline are not ribs (mm).
pub const RIB_MIN_LATERAL_MM: f64 = 30.0;
/// Filled voxels are at least this far from the midline (mm).
pub const MEDIAL_EXCLUSION_MM: f64 = 20.0;
/// How fast the rib cage's distance from the lung's centre may grow along its circumference
/// (mm per mm of arc) ...
pub const CAGE_SLOPE: f64 = 0.5;
/// ... plus this (mm), compared with every nearer rib hit within [`SMOOTH_WINDOW_DEG`].
pub const OUTLIER_MM: f64 = 4.0;
/// The cage never lies deeper than any rib hit within [`SMOOTH_WINDOW_MM`] plus this slope
/// (mm per mm across lines) times their distance plus [`OUTLIER_MM`]: the lower envelope.
pub const ENVELOPE_SLOPE: f64 = 1.0;
/// Window of the smoothness rule (mm along the rib line).
pub const SMOOTH_WINDOW_MM: f64 = 40.0;
/// Widest gap between rib hits that is interpolated (mm): an intercostal space seen obliquely.
pub const MAX_RIB_GAP_MM: f64 = 40.0;
/// Distance kept free inside the rib cage: parietal pleura, innermost intercostal muscle (mm).
pub const WALL_MARGIN_MM: f64 = 2.0;
/// Deepest fill from the lung's edge (mm).
pub const MAX_DEPTH_MM: f64 = 60.0;
/// Half-width of the in-plane opening of the fill (mm): thinner strands are partial volume or
/// a line through a gap, not a layer of lung.
pub const OPENING_MM: f64 = 2.0;
/// Thinnest fill along a ray (mm).
pub const MIN_DEPTH_MM: f64 = 3.0;
/// Share of air (HU < -400) in a region at or above which it is consolidation.
pub const AIR_BRONCHOGRAM_MIN: f64 = 0.01;
/// Share of air below which a region can be effusion.
pub const EFFUSION_MAX_AIR: f64 = 0.003;
/// Median HU of the soft-tissue part (> -100 HU) at or below which an airless region is
/// effusion (fluid 0-20 HU; consolidation and atelectasis are denser).
pub const EFFUSION_MAX_HU: f64 = 22.0;
/// How far ground glass in front of an added consolidation is followed (mm).
pub const GROUND_GLASS_REACH_MM: f64 = 15.0;
/// Regions whose filled part is smaller than this are left out (mL).
pub const MIN_REGION_ML: f64 = 2.0;

const AIR_HU: f32 = -400.0;
const DENSE_HU: f32 = -300.0;
const OPACITY_LOW_HU: f32 = -700.0;

/// Which lung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lung {
    /// The patient's left lung (model channel 0).
    Left,
    /// The patient's right lung (model channel 1).
    Right,
}

/// What a dense dependent region was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenseKind {
    /// Air bronchograms: lung and opacity.
    Consolidation,
    /// Airless fluid density: neither lung nor opacity.
    Effusion,
    /// Neither: counted as lung and opacity, and said.
    Indeterminate,
}

/// One dense region found between the aerated lung and the rib cage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DenseRegion {
    /// Its side.
    pub side: Lung,
    /// What it was called.
    pub kind: DenseKind,
    /// Volume of the region (mL): filled voxels and the dense model opacity touching them.
    pub volume_ml: f64,
    /// Of which added by this step (mL).
    pub added_ml: f64,
    /// Mean HU of its dense (> -300 HU) voxels.
    pub mean_hu: f64,
    /// Share of air in it and the holes it encloses (%).
    pub air_pct: f64,
    /// First and last slice (canonical, inferior -> superior).
    pub slices: (usize, usize),
}

/// The refined masks (each `[slices, rows, cols]`, 0/1) and what was found.
#[derive(Debug, Clone)]
pub struct Refined {
    /// Left lung, now with its consolidated and indeterminate dependent regions.
    pub left_lung: Vec<u8>,
    /// Right lung, likewise.
    pub right_lung: Vec<u8>,
    /// Lung opacity, with the same regions; effusion removed.
    pub opacity: Vec<u8>,
    /// Left pleural effusion.
    pub effusion_left: Vec<u8>,
    /// Right pleural effusion.
    pub effusion_right: Vec<u8>,
    /// Dense dependent regions called indeterminate (subset of the lungs and the opacity).
    pub indeterminate: Vec<u8>,
    /// The regions, largest first.
    pub regions: Vec<DenseRegion>,
    /// What the reader must know (e.g. one lung much smaller than the other).
    pub warnings: Vec<String>,
}

/// The inputs do not have `shape` elements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("masks and volume differ in size")]
pub struct ShapeMismatch;

/// Refines the model's masks with the pleural cavity.
///
/// `hu`: the (denoised) HU the model saw; `left`, `right`, `opacity`: the model's channels
/// (non-zero = inside); all `[slices, rows, cols]` = `shape`; `spacing_mm` `[slice, row, col]`.
///
/// # Errors
/// [`ShapeMismatch`] when an input does not have `shape` elements.
pub fn refine(
    hu: &[f32],
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    left: &[u8],
    right: &[u8],
    opacity: &[u8],
) -> Result<Refined, ShapeMismatch> {
    let n: usize = shape.iter().product();
    if [hu.len(), left.len(), right.len(), opacity.len()].iter().any(|&l| l != n) {
        return Err(ShapeMismatch);
    }
    let [slices, rows, cols] = shape;
    let plane = rows * cols;
    let lungs = [left, right];
    let mid = midlines(&lungs, shape);
    let geometry = Geometry { shape, spacing_mm };

    // 1-3: per slice and side, the filled pixels (indices within the slice)
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).clamp(1, 8);
    let per = slices.div_ceil(threads).max(1);
    let mut fills: Vec<[Vec<u32>; 2]> = Vec::with_capacity(slices);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..slices)
            .step_by(per)
            .map(|start| {
                let geometry = &geometry;
                let mid = &mid;
                scope.spawn(move || {
                    (start..(start + per).min(slices))
                        .map(|k| {
                            let hu = &hu[k * plane..(k + 1) * plane];
                            let l = &lungs[0][k * plane..(k + 1) * plane];
                            let r = &lungs[1][k * plane..(k + 1) * plane];
                            [fill_slice(geometry, hu, l, r, mid[k], 1), fill_slice(geometry, hu, r, l, mid[k], -1)]
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            // a panic here is a bug in this module, not bad input
            fills.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
    });

    let mut out = Refined {
        left_lung: left.iter().map(|&v| u8::from(v != 0)).collect(),
        right_lung: right.iter().map(|&v| u8::from(v != 0)).collect(),
        opacity: opacity.iter().map(|&v| u8::from(v != 0)).collect(),
        effusion_left: vec![0; n],
        effusion_right: vec![0; n],
        indeterminate: vec![0; n],
        regions: Vec::new(),
        warnings: Vec::new(),
    };
    let voxel_ml = spacing_mm.iter().product::<f64>() / 1000.0;

    // 4: regions per side
    for side in 0..2 {
        let mut filled = vec![false; n];
        for (k, f) in fills.iter().enumerate() {
            for &p in &f[side] {
                let i = k * plane + p as usize;
                // a voxel claimed by both sides stays with the left (processed first)
                if side == 0 || (out.left_lung[i] == 0 && out.effusion_left[i] == 0) {
                    filled[i] = true;
                }
            }
        }
        let lung = lungs[side];
        // candidates: filled voxels and the dense model opacity of this lung
        let candidate: Vec<bool> =
            (0..n).map(|i| filled[i] || (lung[i] != 0 && opacity[i] != 0 && hu[i] > DENSE_HU)).collect();
        for region in components(candidate.clone(), shape, &filled) {
            let added = region.iter().filter(|&&i| filled[i as usize]).count();
            if added as f64 * voxel_ml < MIN_REGION_ML {
                continue;
            }
            let stats = region_stats(&region, hu, shape, &candidate);
            let kind = if stats.air_fraction >= AIR_BRONCHOGRAM_MIN {
                DenseKind::Consolidation
            } else if stats.air_fraction < EFFUSION_MAX_AIR && stats.median_soft_hu <= EFFUSION_MAX_HU {
                DenseKind::Effusion
            } else {
                DenseKind::Indeterminate
            };
            let (lung_out, effusion_out) = if side == 0 {
                (&mut out.left_lung, &mut out.effusion_left)
            } else {
                (&mut out.right_lung, &mut out.effusion_right)
            };
            for &i in &region {
                let i = i as usize;
                match kind {
                    DenseKind::Effusion => {
                        lung_out[i] = 0;
                        out.opacity[i] = 0;
                        effusion_out[i] = 1;
                    }
                    DenseKind::Consolidation | DenseKind::Indeterminate => {
                        lung_out[i] = 1;
                        if hu[i] > OPACITY_LOW_HU {
                            out.opacity[i] = 1;
                        }
                        if kind == DenseKind::Indeterminate {
                            out.indeterminate[i] = 1;
                        }
                    }
                }
            }
            let ks = region.iter().map(|&i| i as usize / plane);
            let first = ks.clone().min().unwrap_or(0);
            let last = ks.max().unwrap_or(0);
            out.regions.push(DenseRegion {
                side: if side == 0 { Lung::Left } else { Lung::Right },
                kind,
                volume_ml: region.len() as f64 * voxel_ml,
                added_ml: added as f64 * voxel_ml,
                mean_hu: stats.mean_dense_hu,
                air_pct: 100.0 * stats.air_fraction,
                slices: (first, last),
            });
        }
    }
    grow_ground_glass(&mut out, hu, shape, spacing_mm, &fills);
    out.regions.sort_by(|a, b| b.volume_ml.total_cmp(&a.volume_ml));
    let volumes =
        [out.left_lung.iter(), out.right_lung.iter()].map(|m| m.filter(|&&v| v != 0).count() as f64 * voxel_ml);
    for (side, other, name) in [(0, 1, "left"), (1, 0, "right")] {
        if volumes[other] > 500.0 && volumes[side] < 0.3 * volumes[other] {
            out.warnings.push(format!(
                "the {name} lung measures {:.0} mL, {:.0} % of the other: complete opacification, collapse, a large \
                 effusion or resection are not excluded, and disease on that side may be under-estimated",
                volumes[side],
                100.0 * volumes[side] / volumes[other]
            ));
        }
    }
    Ok(out)
}

/// Ground glass in front of an added dense region: the model leaves out opacity at its lung
/// mask's edge (partial volume with the wall), and that edge was the consolidation. Lung
/// voxels whose HU is in the ground-glass band, connected in-plane to an added consolidation or
/// indeterminate region through such voxels and at most [`GROUND_GLASS_REACH_MM`] from it, are
/// opacity. Effusion does not grow it (compressed lung in front of fluid is not counted).
fn grow_ground_glass(out: &mut Refined, hu: &[f32], shape: [usize; 3], spacing_mm: [f64; 3], fills: &[[Vec<u32>; 2]]) {
    let [_, rows, cols] = shape;
    let plane = rows * cols;
    let steps = (GROUND_GLASS_REACH_MM / spacing_mm[1].min(spacing_mm[2])).round() as usize;
    let in_band = |v: f32| v > OPACITY_LOW_HU && v <= DENSE_HU;
    for (k, fill) in fills.iter().enumerate() {
        let base = k * plane;
        let mut frontier: Vec<usize> = fill
            .iter()
            .flatten()
            .map(|&p| p as usize)
            // the fill that was kept as lung (consolidation or indeterminate), not effusion or
            // a region too small to keep
            .filter(|&p| out.opacity[base + p] != 0 && (out.left_lung[base + p] != 0 || out.right_lung[base + p] != 0))
            .collect();
        for _ in 0..steps {
            let mut next = Vec::new();
            for &p in &frontier {
                let (r, c) = (p / cols, p % cols);
                for (dr, dc) in [(-1isize, 0isize), (1, 0), (0, -1), (0, 1)] {
                    let (rr, cc) = (r as isize + dr, c as isize + dc);
                    if rr < 0 || cc < 0 || rr as usize >= rows || cc as usize >= cols {
                        continue;
                    }
                    let q = rr as usize * cols + cc as usize;
                    let i = base + q;
                    let lung = out.left_lung[i] != 0 || out.right_lung[i] != 0;
                    if lung && out.opacity[i] == 0 && in_band(hu[i]) {
                        out.opacity[i] = 1;
                        next.push(q);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
    }
}

/// The volume's geometry.
struct Geometry {
    shape: [usize; 3],
    spacing_mm: [f64; 3],
}

/// Midline column per slice: halfway between the two lungs' medial edges where both are
/// present, else the median of those, else the image centre.
fn midlines(lungs: &[&[u8]; 2], shape: [usize; 3]) -> Vec<f64> {
    let [slices, rows, cols] = shape;
    let plane = rows * cols;
    let per_slice: Vec<Option<f64>> = (0..slices)
        .map(|k| {
            let (mut left_min, mut right_max) = (usize::MAX, None::<usize>);
            for r in 0..rows {
                for c in 0..cols {
                    let i = k * plane + r * cols + c;
                    if lungs[0][i] != 0 {
                        left_min = left_min.min(c);
                    }
                    if lungs[1][i] != 0 {
                        right_max = Some(right_max.map_or(c, |m: usize| m.max(c)));
                    }
                }
            }
            match (left_min, right_max) {
                (l, Some(r)) if l != usize::MAX && l > r => Some((l + r) as f64 / 2.0),
                _ => None,
            }
        })
        .collect();
    let mut known: Vec<f64> = per_slice.iter().flatten().copied().collect();
    let fallback = if known.is_empty() {
        cols as f64 / 2.0
    } else {
        let mid = known.len() / 2;
        *known.select_nth_unstable_by(mid, f64::total_cmp).1
    };
    per_slice.into_iter().map(|m| m.unwrap_or(fallback)).collect()
}

/// What one line found, walking from the lung's first voxel away from it.
#[derive(Debug, Clone, Copy, Default)]
struct Walk {
    /// Position (index along the line) where the lung ends: its last run of at least
    /// [`MIN_LUNG_RUN_MM`].
    exit: Option<usize>,
    /// First bone position beyond it.
    bone: Option<usize>,
    /// First position of a fat run beyond the partial-volume rim.
    fat: Option<usize>,
}

/// The directions walked, as (rows, cols) steps with the lateral column step of the lung's
/// side: posterior, and posterior-lateral at 45 degrees. Dependent (posterior) only: anteriorly
/// and medially the lung borders the heart and the mediastinum.
const DIRECTIONS: [(isize, isize); 2] = [(1, 0), (1, 1)];

/// The lines of one direction across the slice: each a list of (row, col) in walking order.
fn lines(rows: usize, cols: usize, (dr, dc): (isize, isize)) -> Vec<Vec<(usize, usize)>> {
    let (rows_i, cols_i) = (rows as isize, cols as isize);
    let starts: Vec<(isize, isize)> = if dc == 0 {
        (0..cols_i).map(|c| (0, c)).collect()
    } else {
        // lines entering through the top edge and through the side they come from
        let side_col = if dc > 0 { 0 } else { cols_i - 1 };
        (0..cols_i).map(|c| (0, c)).chain((1..rows_i).map(|r| (r, side_col))).collect()
    };
    starts
        .into_iter()
        .map(|(mut r, mut c)| {
            let mut line = Vec::new();
            while r >= 0 && c >= 0 && r < rows_i && c < cols_i {
                line.push((r as usize, c as usize));
                r += dr;
                c += dc;
            }
            line
        })
        .collect()
}

/// The pixels of one slice to add to `lung` (`other`: the other lung): indices within the slice.
/// `lateral` is the column step towards this lung's side of the body (+1 left, -1 right).
fn fill_slice(g: &Geometry, hu: &[f32], lung: &[u8], other: &[u8], midline: f64, lateral: isize) -> Vec<u32> {
    let [_, rows, cols] = g.shape;
    let [_, sr, sc] = g.spacing_mm;
    let area = lung.iter().filter(|&&v| v != 0).count() as f64 * sr * sc;
    if area < 200.0 {
        return Vec::new();
    }
    let mut fill = vec![false; rows * cols];
    for (dr, dc) in DIRECTIONS {
        let dc = dc * lateral;
        let step_mm = ((dr as f64 * sr).powi(2) + (dc as f64 * sc).powi(2)).sqrt();
        // distance between neighbouring lines (mm)
        let pitch_mm = if dc == 0 { sc } else { sr * sc / step_mm };
        fill_direction(g, hu, lung, other, midline, &lines(rows, cols, (dr, dc)), step_mm, pitch_mm, &mut fill);
    }
    // the fill's bounding box
    let (mut r0, mut r1, mut c0, mut c1) = (usize::MAX, 0, usize::MAX, 0);
    for r in 0..rows {
        for c in 0..cols {
            if fill[r * cols + c] {
                (r0, r1, c0, c1) = (r0.min(r), r1.max(r), c0.min(c), c1.max(c));
            }
        }
    }
    if r0 == usize::MAX {
        return Vec::new();
    }
    let (r0, c0) = (r0.saturating_sub(2), c0.saturating_sub(2));
    let (r1, c1) = ((r1 + 2).min(rows - 1), (c1 + 2).min(cols - 1));
    let (bw, bh) = (c1 - c0 + 1, r1 - r0 + 1);
    let fill: Vec<bool> = (0..bw * bh).map(|q| fill[(r0 + q / bw) * cols + c0 + q % bw]).collect();
    // an opening removes the thin rims a normal lung leaves against the wall
    let radius = (OPENING_MM / sr.min(sc)).ceil().max(1.0) as usize;
    let opened = open(&fill, bw, bh, radius);
    // only what touches the lung: a region cut off from it lies beyond the wall
    let mut out = Vec::new();
    let mut seen = vec![false; bw * bh];
    let mut stack = Vec::new();
    for start in 0..bw * bh {
        if !opened[start] || seen[start] {
            continue;
        }
        let (mut pixels, mut touches) = (Vec::new(), false);
        seen[start] = true;
        stack.push(start);
        while let Some(q) = stack.pop() {
            pixels.push(q);
            let (y, x) = (q / bw, q % bw);
            for (dy, dx) in [(-1isize, -1isize), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)] {
                let (yy, xx) = (y as isize + dy, x as isize + dx);
                if yy < 0 || xx < 0 || yy as usize >= bh || xx as usize >= bw {
                    continue;
                }
                let j = yy as usize * bw + xx as usize;
                if lung[(r0 + yy as usize) * cols + c0 + xx as usize] != 0 {
                    touches = true;
                }
                if opened[j] && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        if touches {
            out.extend(pixels.into_iter().map(|q| ((r0 + q / bw) * cols + c0 + q % bw) as u32));
        }
    }
    out.sort_unstable();
    out
}

/// Walks the lines of one direction and marks what lies between the lung and the rib cage.
#[allow(clippy::too_many_arguments)]
fn fill_direction(
    g: &Geometry,
    hu: &[f32],
    lung: &[u8],
    other: &[u8],
    midline: f64,
    lines: &[Vec<(usize, usize)>],
    step_mm: f64,
    pitch_mm: f64,
    fill: &mut [bool],
) {
    let cols = g.shape[2];
    let sc = g.spacing_mm[2];
    let lateral_mm = |c: usize| (c as f64 - midline).abs() * sc;
    let mm = |steps: usize| steps as f64 * step_mm;
    let at = |(r, c): (usize, usize)| r * cols + c;

    // 1. walk each line from the lung's first voxel
    let walks: Vec<Walk> = lines
        .iter()
        .map(|line| {
            let mut w = Walk::default();
            let Some(first) = line.iter().position(|&p| lung[at(p)] != 0) else { return w };
            let (mut run_start, mut in_run) = (first, true);
            let mut fat_run: Option<usize> = None;
            for (j, &p) in line.iter().enumerate().skip(first + 1) {
                let i = at(p);
                let is_lung = lung[i] != 0;
                if is_lung && !in_run {
                    run_start = j;
                    in_run = true;
                } else if !is_lung && in_run {
                    in_run = false;
                    if mm(j - run_start) >= MIN_LUNG_RUN_MM || run_start == first {
                        w = Walk { exit: Some(j), bone: None, fat: None };
                        fat_run = None;
                    }
                }
                let Some(exit) = w.exit else { continue };
                if in_run {
                    continue;
                }
                let v = hu[i];
                if v >= BONE_HU {
                    w.bone = Some(j);
                    break;
                }
                if (FAT_HU[0]..=FAT_HU[1]).contains(&v) && mm(j - exit) > PARTIAL_VOLUME_MM {
                    let start = *fat_run.get_or_insert(j);
                    if w.fat.is_none() && mm(j - start + 1) >= FAT_STOP_MM {
                        w.fat = Some(start);
                    }
                } else {
                    fat_run = None;
                }
                if mm(j - exit) > MAX_DEPTH_MM + 20.0 {
                    break;
                }
            }
            w
        })
        .collect();

    // 2. the rib cage along this direction: bone hits away from the spine, smooth across
    //    neighbouring lines; a hit deeper than a nearby shallower hit allows went through an
    //    intercostal space (to the scapula, or a rib below or above the lung's edge)
    let n = lines.len();
    let rib: Vec<Option<f64>> = (0..n)
        .map(|j| match walks[j].bone {
            Some(b) if lateral_mm(lines[j][b].1) >= RIB_MIN_LATERAL_MM => Some(b as f64 * step_mm),
            _ => None,
        })
        .collect();
    let window = (SMOOTH_WINDOW_MM / pitch_mm).round() as usize;
    // the lower envelope of the hits: no point of the cage deeper than a nearby hit allows
    let envelope = |j: usize| -> f64 {
        (j.saturating_sub(window)..=(j + window).min(n - 1))
            .filter_map(|o| rib[o].map(|r| r + ENVELOPE_SLOPE * o.abs_diff(j) as f64 * pitch_mm + OUTLIER_MM))
            .fold(f64::INFINITY, f64::min)
    };
    let cleaned: Vec<Option<f64>> = (0..n)
        .map(|j| {
            let d = rib[j]?;
            // deeper than a nearby hit allows on both sides: a dip through an intercostal space
            // (the cage's own curvature deepens towards one side only); an isolated hit, with
            // no other within the window, is no rib line either
            let side = |others: &mut dyn Iterator<Item = usize>| {
                others
                    .filter_map(|o| rib[o].map(|r| r + CAGE_SLOPE * o.abs_diff(j) as f64 * pitch_mm + OUTLIER_MM))
                    .fold(f64::INFINITY, f64::min)
            };
            let before = side(&mut (j.saturating_sub(window)..j));
            let after = side(&mut (j + 1..=(j + window).min(n - 1)));
            (d <= before || d <= after).then_some(d)
        })
        .collect();
    let gap = (MAX_RIB_GAP_MM / pitch_mm).round() as usize;
    let cage = |j: usize| -> Option<f64> {
        if let Some(d) = cleaned[j] {
            return Some(d);
        }
        let before = (1..=gap.min(j)).find_map(|o| cleaned[j - o].map(|d| (o, d)));
        let after = (1..=gap).take_while(|o| j + o < n).find_map(|o| cleaned[j + o].map(|d| (o, d)));
        match (before, after) {
            (Some((ob, db)), Some((oa, da))) if ob + oa <= gap => Some(db + (da - db) * ob as f64 / (ob + oa) as f64),
            // next to the spine: the nearest rib hit, when close
            (Some((o, d)), None) | (None, Some((o, d))) if o as f64 * pitch_mm <= 10.0 => Some(d),
            _ => None,
        }
    };

    // 3. fill each line between the lung's edge and the wall
    for (j, line) in lines.iter().enumerate() {
        let w = walks[j];
        let cage = |j: usize| cage(j).map(|d| d.min(envelope(j)));
        let (Some(exit), Some(wall)) = (w.exit, cage(j)) else { continue };
        let mut to = wall - WALL_MARGIN_MM;
        if let Some(b) = w.bone {
            to = to.min(b as f64 * step_mm - WALL_MARGIN_MM);
        }
        if let Some(f) = w.fat {
            to = to.min(f as f64 * step_mm);
        }
        let depth = to - exit as f64 * step_mm;
        // deeper than a lung layer can be: the wall seen is not this lung's (e.g. through the liver)
        if !(MIN_DEPTH_MM..=MAX_DEPTH_MM).contains(&depth) {
            continue;
        }
        for (pos, &p) in line.iter().enumerate().skip(exit) {
            if pos as f64 * step_mm >= to {
                break;
            }
            let i = at(p);
            let v = hu[i];
            if v >= BONE_HU {
                break;
            }
            if lung[i] != 0 || other[i] != 0 || lateral_mm(p.1) < MEDIAL_EXCLUSION_MM {
                continue;
            }
            if (FAT_HU[0]..=FAT_HU[1]).contains(&v) && mm(pos - exit) > PARTIAL_VOLUME_MM {
                continue;
            }
            fill[i] = true;
        }
    }
}

/// Binary opening with a square of half-width `radius` (erosion then dilation, separable).
fn open(m: &[bool], w: usize, h: usize, radius: usize) -> Vec<bool> {
    let eroded = box_filter(m, w, h, radius, true);
    box_filter(&eroded, w, h, radius, false)
}

/// Separable box erosion (`all`) or dilation (any); outside the box counts as false.
fn box_filter(m: &[bool], w: usize, h: usize, radius: usize, all: bool) -> Vec<bool> {
    let pass = |src: &[bool], horizontal: bool| -> Vec<bool> {
        let mut dst = vec![false; w * h];
        for y in 0..h {
            for x in 0..w {
                let (pos, len) = if horizontal { (x, w) } else { (y, h) };
                let lo = pos.saturating_sub(radius);
                let hi = (pos + radius).min(len - 1);
                let get = |p: usize| if horizontal { src[y * w + p] } else { src[p * w + x] };
                dst[y * w + x] =
                    if all { pos >= radius && pos + radius < len && (lo..=hi).all(get) } else { (lo..=hi).any(get) };
            }
        }
        dst
    };
    let a = pass(m, true);
    pass(&a, false)
}

/// 26-connected components of `mask` that hold at least one `seed` voxel (voxel indices, each
/// component sorted). `mask` is consumed as the visited map.
fn components(mut mask: Vec<bool>, shape: [usize; 3], seed: &[bool]) -> Vec<Vec<u32>> {
    let [s, r, c] = shape;
    let seeds: Vec<usize> = (0..mask.len()).filter(|&i| seed[i] && mask[i]).collect();
    let mut comps: Vec<Vec<u32>> = Vec::new();
    let mut stack = Vec::new();
    for seed in seeds {
        if !mask[seed] {
            continue;
        }
        let mut comp = Vec::new();
        mask[seed] = false;
        stack.push(seed);
        while let Some(i) = stack.pop() {
            comp.push(i as u32);
            let (k, y, x) = (i / (r * c), (i / c) % r, i % c);
            for dk in -1isize..=1 {
                for dy in -1isize..=1 {
                    for dx in -1isize..=1 {
                        let (kk, yy, xx) = (k as isize + dk, y as isize + dy, x as isize + dx);
                        if kk < 0 || yy < 0 || xx < 0 || kk as usize >= s || yy as usize >= r || xx as usize >= c {
                            continue;
                        }
                        let j = (kk as usize * r + yy as usize) * c + xx as usize;
                        if mask[j] {
                            mask[j] = false;
                            stack.push(j);
                        }
                    }
                }
            }
        }
        comp.sort_unstable();
        comps.push(comp);
    }
    comps
}

struct RegionStats {
    mean_dense_hu: f64,
    /// Median HU of the voxels above -100 HU (partial volume with aerated lung left out).
    median_soft_hu: f64,
    air_fraction: f64,
}

/// Mean HU of the dense voxels of a region, and its share of air: its own air voxels and
/// those of the holes it encloses in-plane (air bronchograms inside the lung mask).
fn region_stats(region: &[u32], hu: &[f32], shape: [usize; 3], candidate: &[bool]) -> RegionStats {
    let [_, rows, cols] = shape;
    let plane = rows * cols;
    let (mut dense, mut dense_sum) = (0usize, 0.0f64);
    let mut soft: Vec<f32> = Vec::new();
    let (mut air, mut total) = (0usize, 0usize);
    let mut by_slice: std::collections::BTreeMap<usize, Vec<usize>> = std::collections::BTreeMap::new();
    for &i in region {
        let i = i as usize;
        by_slice.entry(i / plane).or_default().push(i % plane);
        if hu[i] > DENSE_HU {
            dense += 1;
            dense_sum += f64::from(hu[i]);
            if hu[i] > -100.0 {
                soft.push(hu[i]);
            }
        }
    }
    for (k, pixels) in by_slice {
        let (mut r0, mut r1, mut c0, mut c1) = (usize::MAX, 0, usize::MAX, 0);
        for &p in &pixels {
            let (r, c) = (p / cols, p % cols);
            (r0, r1, c0, c1) = (r0.min(r), r1.max(r), c0.min(c), c1.max(c));
        }
        // flood the complement from the border of the box (1 pixel larger)
        let (w, h) = (c1 - c0 + 3, r1 - r0 + 3);
        let mut inside = vec![false; w * h];
        for &p in &pixels {
            inside[(p / cols - r0 + 1) * w + (p % cols - c0 + 1)] = true;
        }
        let mut outside = vec![false; w * h];
        let mut stack: Vec<usize> = (0..w).chain((0..h).map(|y| y * w)).collect();
        while let Some(q) = stack.pop() {
            if outside[q] || inside[q] {
                continue;
            }
            outside[q] = true;
            let (y, x) = (q / w, q % w);
            if x > 0 {
                stack.push(q - 1);
            }
            if x + 1 < w {
                stack.push(q + 1);
            }
            if y > 0 {
                stack.push(q - w);
            }
            if y + 1 < h {
                stack.push(q + w);
            }
        }
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                let q = y * w + x;
                if outside[q] {
                    continue;
                }
                let i = k * plane + (y + r0 - 1) * cols + (x + c0 - 1);
                // holes that are themselves candidates of another region are not this one's
                if !inside[q] && candidate[i] {
                    continue;
                }
                total += 1;
                if hu[i] < AIR_HU {
                    air += 1;
                }
            }
        }
    }
    RegionStats {
        mean_dense_hu: if dense > 0 { dense_sum / dense as f64 } else { 0.0 },
        median_soft_hu: if soft.is_empty() {
            0.0
        } else {
            let mid = soft.len() / 2;
            f64::from(*soft.select_nth_unstable_by(mid, f32::total_cmp).1)
        },
        air_fraction: if total > 0 { air as f64 / total as f64 } else { 0.0 },
    }
}
