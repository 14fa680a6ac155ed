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
//! 2008;15(9):1173-1180, who bound diseased lung by the rib cage; here the cage is found along
//! families of parallel lines rather than by a fitted curve):
//!
//! 0. Gas the model took for lung (a connected part of a slice's lung mask with a median below
//!    [`GAS_HU`]: the stomach's bubble under the left dome, bowel) starts no walk: what lies
//!    behind it is the spleen or the stomach's wall, not a layer of lung.
//! 1. Walks along parallel lines in the dependent directions (posterior, and
//!    posterior-lateral at 45 degrees), each from the lung's first voxel on the line: where the
//!    lung ends (the end of its last run of at least [`MIN_LUNG_RUN_MM`]: air bronchograms are
//!    shorter; lung farther than the deepest layer behind an exit, however thin, such as the
//!    crescent behind the diaphragm dome past the spleen or the liver, gives a new exit), the first
//!    bone beyond (>= [`BONE_HU`]) and the first fat beyond (-180..-40 HU over [`FAT_STOP_MM`] and
//!    [`FAT_STOP_SAMPLES`]: extrapleural and mediastinal fat, which stops the fill; not the ramp
//!    between ground glass and consolidation).
//! 2. The rib cage, as its depth behind the lung's edge: bone hits at least
//!    [`RIB_MIN_LATERAL_MM`] from the midline (ribs, not the spine, the sternum or a
//!    contrast-filled aorta); a hit farther than its neighbours on both sides allow
//!    ([`CAGE_SLOPE`], judged on positions: through an intercostal space to the scapula) is
//!    dropped, unless the neighbouring slices see the cage as deep on that line (the cage behind
//!    the lung's most posterior part curves faster than that slope along parallel lines); depths are interpolated over gaps of at most [`MAX_RIB_GAP_MM`] (so where no rib
//!    is seen the cage follows the lung's outline) and capped by the lower envelope of the hits
//!    of the slice and its neighbours within [`ENVELOPE_Z_MM`] ([`ENVELOPE_SLOPE`]; the looser
//!    of a slice's depths and its positions within [`NEIGHBOUR_WINDOW_MM`], as the lung's edge
//!    moves where a layer thickens or ends, across lines and slices); where the
//!    slice shows no rib near a line (thick slices cut ribs between their segments), the
//!    position the neighbouring slices saw is used.
//! 3. Fill: the voxels between where the lung ends and [`WALL_MARGIN_MM`] inside the cage
//!    (parietal pleura, innermost intercostal muscle), never bone, never fat beyond the lung's
//!    partial-volume rim (with [`Options::air_tissue_ramp`], model 0.2.4, a fat-band sample next
//!    to one below -300 HU on the line is the ramp from air to consolidation, not fat), never
//!    within [`MEDIAL_EXCLUSION_MM`] of the midline (spine, aorta,
//!    oesophagus), only where the layer is [`MIN_DEPTH_MM`] to [`MAX_DEPTH_MM`] thick (deeper:
//!    the wall seen is not this lung's, e.g. through the liver). An in-plane opening
//!    ([`OPENING_MM`]) removes the rims a normal lung leaves (it judges a layer together with
//!    the dense front of it that the model's mask took in); what no longer touches the lung
//!    lies beyond the wall and is dropped. Anterior and medial walks are not made: there the
//!    lung borders the heart and the mediastinum, which no density rule tells apart from
//!    consolidation.
//! 4. Each 3-D connected region of filled voxels, with the dense (> -300 HU) model opacity
//!    touching it and the solid tissue inside the lung's mask continuing it ([`SOLID_HU`],
//!    opened like the fill: the part of a lesion against the wall that the model kept as lung
//!    without calling it opacity), unless it lies wholly within [`APICAL_CAP_MM`] of its lung's
//!    top (the soft tissue over the apex: an apical cap, not a dependent layer), is called:
//!    - consolidation when at least [`AIR_BRONCHOGRAM_MIN`] of it is air (air bronchograms:
//!      short runs of lung beyond the lung's edge, and the holes the region encloses in-plane):
//!      lung and opacity;
//!    - pleural effusion when it holds no air (< [`EFFUSION_MAX_AIR`]) and its median above
//!      -100 HU is at most [`EFFUSION_MAX_HU`] (fluid, 0-20 HU): neither lung nor opacity,
//!      reported on its own;
//!    - indeterminate otherwise (e.g. denser fluid, atelectasis without air bronchograms, an
//!      effusion with consolidation against it): counted as lung and opacity, and reported as
//!      "dense dependent region: effusion or consolidation".
//!
//!    With [`Options::follow_bronchograms`] (model 0.2.3), each region called consolidation is
//!    then followed through its air bronchograms into the tissue the walks do not reach: a lobe
//!    consolidated deeper than [`MAX_DEPTH_MM`] or without aerated lung in its lowest slices
//!    ([`crate::lobar`]).
//! 5. Carried through the slices ([`CARRY_HU_TOLERANCE`]): each region (an indeterminate one
//!    of at least [`MIN_CARRIED_ML`]) continues, as what it was called, from one slice into the
//!    next within the footprint of the slice before and its HU band, never into lung, bone, fat
//!    or another region: up, only into the slices that hold part of it (behind a lesion lying in
//!    front of the layer the walks find no cage); down, for at most [`CARRY_MM`] below them (the
//!    posterior recess behind the diaphragm dome, where no line starts from the lung).
//! 6. Ground glass in front of an added consolidation is opacity ([`GROUND_GLASS_REACH_MM`]):
//!    the model leaves out opacity at its mask's edge, and that edge was the consolidation.
//! 7. What the refined lung encloses in-plane, in the slices where this step added lung, is
//!    lung (and opacity above -700 HU), as in the model's own masks: a lesion that the added
//!    layer closed in, no longer enclosed by aerated lung alone; a stack of such holes that rests
//!    on neither lung nor hole below is the dome of an organ and is left out. The mass-like part
//!    is then followed into the slices where it reaches the hilum or the wall ([`crate::follow`]).
//!
//! What it cannot do (measured in the model README): a lung with no aerated part in a slice
//! starts no walk there (a completely white lung; the base of a consolidated lobe more than
//! [`CARRY_MM`] below the last slice that found it, unless its air bronchograms are followed); anterior, lateral and paramediastinal
//! dense disease is left to the model; the dependent side is posterior (supine patients: a prone
//! or decubitus scan's result says so, [`crate::position::caution`]).

use firstread_volume::parallel::map_in_parallel;
use serde::Serialize;

/// Bone (HU, after denoising): ribs, spine, sternum.
pub const BONE_HU: f32 = 200.0;
/// Fat band (HU).
pub const FAT_HU: [f32; 2] = [-180.0, -40.0];
/// A lung run along a ray shorter than this (mm) is an air bronchogram, not the lung's edge.
pub const MIN_LUNG_RUN_MM: f64 = 10.0;
/// Fat over this length (mm) beyond the lung's partial-volume rim stops a ray's fill.
pub const FAT_STOP_MM: f64 = 2.0;
/// ... and over at least this many samples along the line: the partial-volume ramp between two
/// tissues (ground glass and consolidation, -500 and +30 HU) crosses the fat band in one or two
/// samples whatever their size, and with coarse pixels (or the diagonal lines' longer steps) those
/// alone are FAT_STOP_MM long.
pub const FAT_STOP_SAMPLES: usize = 3;
/// Air (not this lung) over this length stops a walk's fill like fat (mm): wider than an air
/// bronchogram (2-4 mm).
pub const AIR_STOP_MM: f64 = 6.0;
/// Partial-volume rim beyond the lung's edge where fat-like HU do not stop the fill (mm).
pub const PARTIAL_VOLUME_MM: f64 = 1.5;
/// Bone hits closer than this to the midline are not ribs (mm).
pub const RIB_MIN_LATERAL_MM: f64 = 20.0;
/// Filled voxels are at least this far from the midline (mm).
pub const MEDIAL_EXCLUSION_MM: f64 = 15.0;
/// How fast the rib cage's position along the lines may change across neighbouring lines (mm
/// per mm) plus [`OUTLIER_MM`]: a hit beyond what the hits on both sides allow is a dip through
/// an intercostal space.
pub const CAGE_SLOPE: f64 = 0.5;
/// The tolerance added to the smoothness rules (mm).
pub const OUTLIER_MM: f64 = 4.0;
/// The cage's depth behind the lung's edge never exceeds any rib hit's within
/// [`SMOOTH_WINDOW_MM`] (and [`ENVELOPE_Z_MM`] in the neighbouring slices) plus this slope times
/// their distance plus [`OUTLIER_MM`]: the lower envelope.
pub const ENVELOPE_SLOPE: f64 = 0.5;
/// Neighbouring slices within this distance bound a slice's cage (mm).
pub const ENVELOPE_Z_MM: f64 = 10.0;
/// The depth envelopes use the hits within this distance across the lines (mm).
pub const SMOOTH_WINDOW_MM: f64 = 40.0;
/// A slice bounds its own and its neighbours' cage also by its rib hits' positions on the lines
/// within this distance (mm): farther, the cage's curve (the lateral wall seen by a posterior
/// line) is no bound.
pub const NEIGHBOUR_WINDOW_MM: f64 = 8.0;
/// Widest gap between rib hits that is interpolated (mm): an intercostal space seen obliquely.
pub const MAX_RIB_GAP_MM: f64 = 40.0;
/// Distance kept free inside the rib cage: parietal pleura, innermost intercostal muscle (mm).
pub const WALL_MARGIN_MM: f64 = 1.0;
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
/// How far below the last slice that found it a dependent layer is carried down (mm).
pub const CARRY_MM: f64 = 32.0;
/// How far a carried voxel's HU (the median of its 5 x 5 window) may be from the layer's median
/// above (HU).
pub const CARRY_HU_TOLERANCE: f32 = 18.0;
/// Smallest indeterminate region carried into the recess (mL): a layer the walks found over a
/// few slices, not a piece of the liver or spleen at the dome that a few walks crossed.
/// Consolidation and fluid are carried whatever their size.
pub const MIN_CARRIED_ML: f64 = 10.0;
/// Soft tissue (HU) inside a lung's mask taken as the solid part of a lesion next to the fill.
pub const SOLID_HU: f32 = -100.0;
/// How far from a slice's fill solid tissue inside the lung's mask is looked for (mm).
pub const SOLID_REACH_MM: f64 = 40.0;
/// How far ground glass in front of an added consolidation is followed (mm).
pub const GROUND_GLASS_REACH_MM: f64 = 15.0;
/// Regions whose filled part is smaller than this are left out (mL).
pub const MIN_REGION_ML: f64 = 2.0;
/// A region lying wholly within this distance of its lung's top is left out (mm): the soft
/// tissue over the apex (the apical pleural cap, the thoracic inlet in front of the posterior
/// ribs) is no dependent layer, which lies in the lower and posterior lung.
pub const APICAL_CAP_MM: f64 = 20.0;

/// Median HU below which a connected part of a slice's lung mask is gas, not lung parenchyma
/// (aerated lung is -700 to -900 HU; gas, like the stomach's bubble, about -1000).
pub const GAS_HU: f32 = -950.0;

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
    /// Volume of the region (mL): filled voxels, the dense model opacity and the solid tissue
    /// inside the lung's mask touching them, and what was carried down into the recess.
    pub volume_ml: f64,
    /// Of which added by this step (mL).
    pub added_ml: f64,
    /// Of which followed through its air bronchograms beyond the walks (mL; model 0.2.3,
    /// [`crate::lobar`]).
    pub followed_ml: f64,
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
    /// Dense dependent regions called indeterminate (subset of the lungs; their voxels above
    /// -700 HU are opacity, air bronchograms are not).
    pub indeterminate: Vec<u8>,
    /// The regions, largest first.
    pub regions: Vec<DenseRegion>,
    /// What the reader must know (e.g. one lung much smaller than the other).
    pub warnings: Vec<String>,
}

impl Refined {
    /// The model's masks (non-zero = inside, each `[slices, rows, cols]`) as 0/1, with nothing
    /// found yet.
    pub(crate) fn of_model(left: &[u8], right: &[u8], opacity: &[u8]) -> Self {
        let n = left.len();
        Refined {
            left_lung: binary(left),
            right_lung: binary(right),
            opacity: binary(opacity),
            effusion_left: vec![0; n],
            effusion_right: vec![0; n],
            indeterminate: vec![0; n],
            regions: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// The inputs do not have `shape` elements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("masks and volume differ in size")]
pub struct ShapeMismatch;

/// Which optional parts of the step run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Follow each consolidation through its air bronchograms ([`crate::lobar`]; model 0.2.3).
    pub follow_bronchograms: bool,
    /// Along the walks, fat-band HU next to a sample below -300 HU is the layer's own ramp from
    /// air or ground glass to consolidation, not fat ([`FAT_HU`]; model 0.2.4).
    pub air_tissue_ramp: bool,
}

/// Refines the model's masks with the pleural cavity (without the optional parts: model 0.2.0
/// to 0.2.2); [`refine_with`] names them.
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
    refine_with(hu, shape, spacing_mm, left, right, opacity, Options::default())
}

/// [`refine`] with the optional parts `options` names.
///
/// # Errors
/// [`ShapeMismatch`] when an input does not have `shape` elements.
pub fn refine_with(
    hu: &[f32],
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    left: &[u8],
    right: &[u8],
    opacity: &[u8],
    options: Options,
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

    // the line families, per side and direction (the same in every slice)
    let families: [Vec<Family>; 2] = [1isize, -1].map(|lateral| {
        DIRECTIONS.iter().map(|&(dr, dc)| Family::new(rows, cols, spacing_mm, (dr, dc * lateral))).collect()
    });
    // 0. per slice and side, the lung without gas pockets the model took for lung (where any)
    let gas_free: Vec<[Option<Vec<u8>>; 2]> = per_slice(slices, |k| {
        let hu = &hu[k * plane..(k + 1) * plane];
        [0, 1].map(|side| without_gas(&lungs[side][k * plane..(k + 1) * plane], hu, rows, cols))
    });
    let walk_lung = |k: usize, side: usize| -> &[u8] {
        gas_free[k][side].as_deref().unwrap_or(&lungs[side][k * plane..(k + 1) * plane])
    };
    // 1. per slice and side, each line's walk and rib hit
    let walks: Vec<[Vec<SliceWalks>; 2]> = per_slice(slices, |k| {
        let hu = &hu[k * plane..(k + 1) * plane];
        [0, 1].map(|side| {
            let lung = walk_lung(k, side);
            families[side].iter().map(|f| walk_slice(f, cols, spacing_mm[2], hu, lung, mid[k])).collect()
        })
    });
    // 2-3. per slice and side, the filled pixels (indices within the slice)
    let fills: Vec<[Vec<u32>; 2]> = per_slice(slices, |k| {
        let hu = &hu[k * plane..(k + 1) * plane];
        [0, 1].map(|side| {
            let lung = walk_lung(k, side);
            let other = &lungs[1 - side][k * plane..(k + 1) * plane];
            fill_slice(&geometry, k, &families[side], &walks, side, hu, lung, other, mid[k], options)
        })
    });
    let mut out = Refined::of_model(left, right, opacity);
    let voxel_ml = spacing_mm.iter().product::<f64>() / 1000.0;

    // 4: regions per side, within the slices that have a fill (and one more each way)
    let mut consolidations = Vec::new();
    for side in 0..2 {
        let (Some(first), Some(last)) =
            (fills.iter().position(|f| !f[side].is_empty()), fills.iter().rposition(|f| !f[side].is_empty()))
        else {
            continue;
        };
        let (k0, k1) = (first.saturating_sub(1), (last + 1).min(slices - 1));
        let (offset, sub_shape) = (k0 * plane, [k1 - k0 + 1, rows, cols]);
        let len = (k1 - k0 + 1) * plane;
        let mut filled = Bits::new(len);
        let mut seeds = Vec::new();
        for (k, f) in fills.iter().enumerate().take(k1 + 1).skip(k0) {
            for &p in &f[side] {
                let i = k * plane + p as usize;
                // a voxel claimed by both sides stays with the left (processed first)
                if side == 0 || (out.left_lung[i] == 0 && out.effusion_left[i] == 0) {
                    filled.set(i - offset);
                    seeds.push(i - offset);
                }
            }
        }
        let lung = &lungs[side][offset..offset + len];
        // the lung's highest slice, and the lowest one a region may start in and be no apical cap
        let top =
            (0..slices).rev().find(|&k| lungs[side][k * plane..(k + 1) * plane].iter().any(|&v| v != 0)).unwrap_or(0);
        let cap_from = top as f64 - APICAL_CAP_MM / spacing_mm[0];
        let (sub_hu, sub_opacity) = (&hu[offset..offset + len], &opacity[offset..offset + len]);
        let solid = solid_in_lung(&fills[k0..=k1], side, sub_hu, lung, sub_opacity, [rows, cols], spacing_mm);
        // candidates: filled voxels, the dense model opacity of this lung, and the solid tissue
        // inside its mask next to the fill (the part of a lesion the model kept as lung)
        let candidate =
            |i: usize| filled.get(i) || solid.get(i) || (lung[i] != 0 && sub_opacity[i] != 0 && sub_hu[i] > DENSE_HU);
        for sub_region in components(&candidate, sub_shape, &seeds) {
            let added = sub_region.iter().filter(|&&i| filled.get(i as usize) && lung[i as usize] == 0).count();
            if added as f64 * voxel_ml < MIN_REGION_ML {
                continue;
            }
            let lowest = sub_region.iter().map(|&i| i as usize / plane + k0).min().unwrap_or(0);
            if lowest as f64 >= cap_from {
                continue;
            }
            let stats = region_stats(&sub_region, sub_hu, sub_shape, &candidate);
            let kind = if stats.air_fraction >= AIR_BRONCHOGRAM_MIN {
                DenseKind::Consolidation
            } else if stats.air_fraction < EFFUSION_MAX_AIR && stats.median_soft_hu <= EFFUSION_MAX_HU {
                DenseKind::Effusion
            } else {
                DenseKind::Indeterminate
            };
            let mut region: Vec<u32> = sub_region.iter().map(|&i| i + offset as u32).collect();
            let mut added = added;
            // 5. the region is carried through the slices and down into the posterior recess, as
            // what it was called (a small airless dense one is as likely the edge of an organ a few
            // walks crossed)
            if kind != DenseKind::Indeterminate || region.len() as f64 * voxel_ml >= MIN_CARRIED_ML {
                let carried = carry(&region, hu, shape, spacing_mm, &lungs);
                let (this, that) = if side == 0 {
                    ([&out.left_lung, &out.effusion_left], [&out.right_lung, &out.effusion_right])
                } else {
                    ([&out.right_lung, &out.effusion_right], [&out.left_lung, &out.effusion_left])
                };
                // never into another region: one already written, or a candidate of one still to
                // come (a voxel stays in one mask)
                let free = |i: usize| {
                    this.iter().chain(that.iter()).all(|m| m[i] == 0)
                        && !((offset..offset + len).contains(&i) && candidate(i - offset))
                };
                let before = region.len();
                region.extend(carried.into_iter().filter(|&i| free(i as usize)));
                added += region.len() - before;
            }
            let (lung_out, effusion_out) = if side == 0 {
                (&mut out.left_lung, &mut out.effusion_left)
            } else {
                (&mut out.right_lung, &mut out.effusion_right)
            };
            for &i in &region {
                let i = i as usize;
                match kind {
                    // (air the model called lung stays lung)
                    DenseKind::Effusion if hu[i] < AIR_HU && lungs[side][i] != 0 => {}
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
            if kind == DenseKind::Consolidation {
                consolidations.push(crate::lobar::Seed {
                    side,
                    voxels: region.clone(),
                    median_hu: stats.median_soft_hu as f32,
                    region: out.regions.len(),
                });
            }
            out.regions.push(DenseRegion {
                side: if side == 0 { Lung::Left } else { Lung::Right },
                kind,
                volume_ml: region.len() as f64 * voxel_ml,
                added_ml: added as f64 * voxel_ml,
                followed_ml: 0.0,
                mean_hu: stats.mean_dense_hu,
                air_pct: 100.0 * stats.air_fraction,
                slices: (first, last),
            });
        }
    }
    // 4b. a consolidation followed through its air bronchograms, deeper than the walks reach
    if options.follow_bronchograms {
        crate::lobar::follow_bronchograms(&mut out, hu, shape, spacing_mm, &mid, &consolidations);
    }
    grow_ground_glass(&mut out, hu, shape, spacing_mm, &fills);
    let enclosed = enclose(&mut out, hu, shape, &lungs);
    crate::follow::follow_enclosed(&mut out, hu, shape, spacing_mm, &enclosed, options.follow_bronchograms);
    crate::bays::close_bays(&mut out, hu, shape, spacing_mm);
    out.regions.sort_by(|a, b| b.volume_ml.total_cmp(&a.volume_ml));
    let volumes = [&out.left_lung, &out.right_lung].map(|m| count_set(m) as f64 * voxel_ml);
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

/// Solid tissue (> [`SOLID_HU`]) inside a lung's mask that the model did not call opacity, in
/// the slices `fills` covers (`[slices, rows, cols]` sub-volume), near the fill of the slice or
/// its neighbours ([`SOLID_REACH_MM`]), after an in-plane opening ([`OPENING_MM`]) of it
/// together with the slice's fill, which removes vessels and bronchial walls and keeps a
/// lesion's thin rim where it continues the fill: the part of a dense lesion against the wall (a mass, a
/// consolidated segment) that the model's mask kept as lung while leaving it out of its
/// opacity. It joins a region only where it touches the fill.
fn solid_in_lung(
    fills: &[[Vec<u32>; 2]],
    side: usize,
    hu: &[f32],
    lung: &[u8],
    opacity: &[u8],
    [rows, cols]: [usize; 2],
    spacing_mm: [f64; 3],
) -> Bits {
    let plane = rows * cols;
    let radius = (OPENING_MM / spacing_mm[1].min(spacing_mm[2])).ceil().max(1.0) as usize;
    let reach = (SOLID_REACH_MM / spacing_mm[1].min(spacing_mm[2])).ceil() as usize;
    // the slices side by side on the cores: each gives its solid voxels
    let per_slice_solid: Vec<Vec<usize>> = per_slice(fills.len(), |k| {
        // the fill of this slice and its neighbours (a lesion continues through the slices)
        let near = &fills[k.saturating_sub(1)..(k + 2).min(fills.len())];
        let Some((r0, r1, c0, c1)) = pixel_box(near.iter().flat_map(|f| &f[side]).map(|&p| p as usize), cols) else {
            return Vec::new();
        };
        let (r0, c0) = (r0.saturating_sub(reach), c0.saturating_sub(reach));
        let (r1, c1) = ((r1 + reach).min(rows - 1), (c1 + reach).min(cols - 1));
        let (bw, bh) = (c1 - c0 + 1, r1 - r0 + 1);
        let dense: Vec<bool> = (0..bw * bh)
            .map(|q| {
                let i = k * plane + (r0 + q / bw) * cols + c0 + q % bw;
                lung[i] != 0 && opacity[i] == 0 && hu[i] > SOLID_HU
            })
            .collect();
        // the opening judges the solid tissue together with this slice's fill: a lesion's thin
        // rim inside the mask stays where it continues the fill, a vessel stays out
        let mut body = dense.clone();
        for &p in &fills[k][side] {
            let (r, c) = (p as usize / cols, p as usize % cols);
            body[(r - r0) * bw + c - c0] = true;
        }
        open(&body, bw, bh, radius)
            .into_iter()
            .enumerate()
            .filter(|&(q, v)| v && dense[q])
            .map(|(q, _)| k * plane + (r0 + q / bw) * cols + c0 + q % bw)
            .collect()
    });
    let mut solid = Bits::new(fills.len() * plane);
    for &i in per_slice_solid.iter().flatten() {
        solid.set(i);
    }
    solid
}

/// What the refined lungs enclose in-plane is lung, as the model's own masks are "aerated lung
/// and what it encloses": where an added layer closes the lung around a lesion (a mass between
/// the aerated lung and a consolidated layer, no longer enclosed by aerated lung alone, so left
/// out of the model's mask), the lesion is lung again, and opacity above -700 HU. Only in slices
/// where this step added lung; never effusion, never the other lung. As in the model
/// (`enclosed_regions`), a 3-D stack of holes that is open below (at least half of its lower
/// face on what is neither this lung nor a hole) is the dome of the liver or the spleen seen as
/// an island inside the lung's base, not a lesion, and is left out. Returns the voxels added,
/// per side.
fn enclose(out: &mut Refined, hu: &[f32], shape: [usize; 3], model: &[&[u8]; 2]) -> [Vec<u32>; 2] {
    let [slices, rows, cols] = shape;
    let plane = rows * cols;
    let mut enclosed = [Vec::new(), Vec::new()];
    for (side, model) in model.iter().enumerate() {
        let (lung, other, effusion) = if side == 0 {
            (&out.left_lung, &out.right_lung, &out.effusion_left)
        } else {
            (&out.right_lung, &out.left_lung, &out.effusion_right)
        };
        // per slice, the pixels the lung encloses
        let holes: Vec<Vec<usize>> = per_slice(slices, |k| {
            let range = k * plane..(k + 1) * plane;
            let (lung, other, effusion) = (&lung[range.clone()], &other[range.clone()], &effusion[range.clone()]);
            // only where this step added lung
            if lung.iter().zip(&model[range]).all(|(&a, &b)| (a != 0) == (b != 0)) {
                return Vec::new();
            }
            let Some((r0, r1, c0, c1)) = pixel_box((0..plane).filter(|&p| lung[p] != 0), cols) else {
                return Vec::new();
            };
            // flood what is not lung from the box's border (one pixel wider)
            let (w, h) = (c1 - c0 + 3, r1 - r0 + 3);
            let inside = |q: usize| -> bool {
                let (y, x) = (q / w, q % w);
                if y == 0 || x == 0 || y == h - 1 || x == w - 1 {
                    return false;
                }
                lung[(y - 1 + r0) * cols + x - 1 + c0] != 0
            };
            let outside = outside_of(inside, w, h);
            (0..w * h)
                .filter(|&q| !outside[q] && !inside(q))
                .map(|q| (q / w - 1 + r0) * cols + q % w - 1 + c0)
                .filter(|&p| other[p] == 0 && effusion[p] == 0)
                .map(|p| k * plane + p)
                .collect()
        });
        let seeds: Vec<usize> = holes.iter().flatten().copied().collect();
        if seeds.is_empty() {
            continue;
        }
        let mut is_hole = Bits::new(slices * plane);
        for &i in &seeds {
            is_hole.set(i);
        }
        let candidate = |i: usize| is_hole.get(i);
        let mut kept = Vec::new();
        for stack in components(&candidate, shape, &seeds) {
            // the lower face: hole voxels with no hole below; open where below is not lung either
            let (mut face, mut open) = (0usize, 0usize);
            for &i in &stack {
                let i = i as usize;
                let below = i.checked_sub(plane);
                if below.is_some_and(|b| is_hole.get(b)) {
                    continue;
                }
                face += 1;
                if below.is_none_or(|b| lung[b] == 0) {
                    open += 1;
                }
            }
            if 2 * open < face {
                kept.extend(stack);
            }
        }
        // written before the other side looks (a voxel stays in one lung)
        let lung_out = if side == 0 { &mut out.left_lung } else { &mut out.right_lung };
        for &i in &kept {
            lung_out[i as usize] = 1;
            if hu[i as usize] > OPACITY_LOW_HU {
                out.opacity[i as usize] = 1;
            }
        }
        enclosed[side] = kept;
    }
    enclosed
}

/// What of a `w` x `h` box whose border row and column hold nothing `inside` is reachable from
/// that border without crossing `inside` (4-connected): the complement of `inside` and the holes
/// it encloses.
pub(crate) fn outside_of(inside: impl Fn(usize) -> bool, w: usize, h: usize) -> Vec<bool> {
    let mut outside = vec![false; w * h];
    // the border is never inside: starting from its top row and left column reaches all of it
    let mut stack: Vec<usize> = (0..w).chain((0..h).map(|y| y * w)).collect();
    while let Some(q) = stack.pop() {
        if outside[q] || inside(q) {
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
    outside
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
                for q in neighbours4(p, rows, cols) {
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

/// Carries a dependent layer through the slices, each slice from its neighbour's footprint: a
/// slice takes the voxels of the layer's footprint in the neighbouring slice (the layer narrows
/// from one slice to the next, and a wider reach runs into the chest wall and the organs under
/// the dome) whose in-plane 5 x 5 median HU (air left out: the image's noise is as wide as the
/// band) lies within [`CARRY_HU_TOLERANCE`] of the layer's median there (the liver or spleen
/// under the dome is denser than fluid, and usually than consolidation), never lung, bone or
/// fat.
///
/// - Up, only into the slices that hold part of the region: where a lesion lies in front of the
///   layer (a mass the model left out once the lung behind it is consolidated), the walks find no
///   cage behind it, and the layer continues from the slice below.
/// - Down, for at most [`CARRY_MM`] below the last slice that holds part of it: the consolidated
///   or fluid-filled posterior recess behind the diaphragm dome, where no line starts from the
///   lung.
fn carry(region: &[u32], hu: &[f32], shape: [usize; 3], spacing_mm: [f64; 3], lungs: &[&[u8]; 2]) -> Vec<u32> {
    let [slices, rows, cols] = shape;
    let plane = rows * cols;
    // the region's pixels per slice, then what is carried into each
    let mut fills: Vec<Vec<u32>> = vec![Vec::new(); slices];
    for &i in region {
        fills[i as usize / plane].push((i as usize % plane) as u32);
    }
    let own: Vec<bool> = fills.iter().map(|f| !f.is_empty()).collect();
    let up: Vec<(usize, usize)> = (1..slices).map(|k| (k - 1, k)).collect();
    let down: Vec<(usize, usize)> = (0..slices.saturating_sub(1)).rev().map(|k| (k + 1, k)).collect();
    let mut carried = Vec::new();
    for (pairs, beyond_mm) in [(up, 0.0), (down, CARRY_MM)] {
        // (median HU of the layer, mm beyond the last slice whose walks found it)
        let mut layer: Option<(f32, f64)> = None;
        for (from, k) in pairs {
            if fills[from].is_empty() {
                layer = None;
                continue;
            }
            let (median, past_mm) = match layer {
                Some((m, d)) if !own[from] => (m, d + spacing_mm[0]),
                _ => {
                    let from_hu = &hu[from * plane..(from + 1) * plane];
                    let mut values: Vec<f32> =
                        fills[from].iter().map(|&p| from_hu[p as usize]).filter(|&v| v >= AIR_HU).collect();
                    let Some(median) = median(&mut values) else { continue };
                    (median, spacing_mm[0])
                }
            };
            if !own[k] && past_mm > beyond_mm {
                layer = None;
                continue;
            }
            let added = carry_slice(&fills[from], &fills[k], k, median, hu, shape, lungs);
            if added.is_empty() {
                layer = None;
                continue;
            }
            // where the walks found a layer here too, the next slice's median is this slice's
            layer = Some((median, past_mm));
            carried.extend(added.iter().map(|&p| (k * plane + p as usize) as u32));
            fills[k].extend(added);
        }
    }
    carried
}

/// The pixels of slice `k` (indices within the slice) under the footprint `from` of the
/// neighbouring slice that the layer whose median is `median` continues into: not already in
/// `own`, not lung, bone or fat, and within [`CARRY_HU_TOLERANCE`] of `median` on the 5 x 5
/// median HU.
fn carry_slice(
    from: &[u32],
    own: &[u32],
    k: usize,
    median: f32,
    hu: &[f32],
    [_, rows, cols]: [usize; 3],
    lungs: &[&[u8]; 2],
) -> Vec<u32> {
    let plane = rows * cols;
    let mut own = own.to_vec();
    own.sort_unstable();
    let slice = &hu[k * plane..(k + 1) * plane];
    let mut window = Vec::with_capacity(25);
    let mut footprint = from.to_vec();
    footprint.sort_unstable();
    footprint.dedup();
    footprint
        .into_iter()
        .filter(|&p| {
            let (i, v) = (k * plane + p as usize, slice[p as usize]);
            own.binary_search(&p).is_err()
                && lungs[0][i] == 0
                && lungs[1][i] == 0
                && (AIR_HU..BONE_HU).contains(&v)
                && !(FAT_HU[0]..=FAT_HU[1]).contains(&v)
                && (median_around(slice, [rows, cols], p as usize, &mut window) - median).abs() <= CARRY_HU_TOLERANCE
        })
        .collect()
}

/// The lung mask of one slice (`[rows, cols]`) without its in-plane connected parts whose median
/// HU is below [`GAS_HU`]: gas (the stomach's bubble under the dome, bowel), not lung
/// parenchyma, which the model may take for lung; no walk starts from it. `None` when there is
/// none (the usual case: no copy).
fn without_gas(lung: &[u8], hu: &[f32], rows: usize, cols: usize) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    crate::gas::for_each_part(lung, rows, cols, |part| {
        if crate::gas::median_below_gas(hu, part) {
            let cleaned = out.get_or_insert_with(|| lung.to_vec());
            for &p in part {
                cleaned[p] = 0;
            }
        }
    });
    out
}

/// In-plane median of the non-air voxels (>= -400 HU) of the 5 x 5 window around pixel `p` of
/// a slice (`[rows, cols]`), clipped at the edges; the pixel's own value where the window holds
/// none. A median, not a mean: at the layer's edge the window is up to half wall or organ, and a
/// mean would drop the edge pixels of each carried slice, thinning the layer slice by slice.
pub(crate) fn median_around(slice: &[f32], [rows, cols]: [usize; 2], p: usize, window: &mut Vec<f32>) -> f32 {
    let (r, c) = (p / cols, p % cols);
    window.clear();
    for rr in r.saturating_sub(2)..=(r + 2).min(rows - 1) {
        for cc in c.saturating_sub(2)..=(c + 2).min(cols - 1) {
            let v = slice[rr * cols + cc];
            if v >= AIR_HU {
                window.push(v);
            }
        }
    }
    median(window).unwrap_or(slice[p])
}

/// The median of `values` (reordered), `None` when empty.
pub(crate) fn median<T: Copy + PartialOrd>(values: &mut [T]) -> Option<T> {
    let mid = values.len() / 2;
    if values.is_empty() {
        return None;
    }
    Some(*values.select_nth_unstable_by(mid, |a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal)).1)
}

/// The bounding box `(first row, last row, first column, last column)` of pixel indices of a
/// slice `cols` wide; `None` when there are none.
pub(crate) fn pixel_box(pixels: impl IntoIterator<Item = usize>, cols: usize) -> Option<(usize, usize, usize, usize)> {
    pixels.into_iter().fold(None, |b, p| {
        let (r, c) = (p / cols, p % cols);
        Some(b.map_or((r, r, c, c), |(r0, r1, c0, c1): (usize, usize, usize, usize)| {
            (r0.min(r), r1.max(r), c0.min(c), c1.max(c))
        }))
    })
}

/// Each row's first and last non-zero column of a slice `cols` wide (`None` for an empty row).
pub(crate) fn row_spans(slice: &[u8], cols: usize) -> impl Iterator<Item = Option<(usize, usize)>> + '_ {
    slice.chunks(cols).map(|row| Some((row.iter().position(|&v| v != 0)?, row.iter().rposition(|&v| v != 0)?)))
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
    // slices side by side; in each row only the left lung's first and the right lung's last
    // column matter
    let found: Vec<Option<f64>> = per_slice(slices, |k| {
        let (mut left_min, mut right_max) = (usize::MAX, None::<usize>);
        for r in 0..rows {
            let row = k * plane + r * cols..k * plane + (r + 1) * cols;
            if let Some(c) = lungs[0][row.clone()].iter().position(|&v| v != 0) {
                left_min = left_min.min(c);
            }
            if let Some(c) = lungs[1][row].iter().rposition(|&v| v != 0) {
                right_max = Some(right_max.map_or(c, |m: usize| m.max(c)));
            }
        }
        match (left_min, right_max) {
            (l, Some(r)) if l != usize::MAX && l > r => Some((l + r) as f64 / 2.0),
            _ => None,
        }
    });
    let mut known: Vec<f64> = found.iter().flatten().copied().collect();
    let fallback = median(&mut known).unwrap_or(cols as f64 / 2.0);
    found.into_iter().map(|m| m.unwrap_or(fallback)).collect()
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
/// side: posterior, and posterior-lateral at 45 degrees. Never anterior or medial: there the
/// lung borders the heart and the mediastinum. (Lateral walks were tried: at the apex they
/// reach the axilla, and they added little on the real sample.)
const DIRECTIONS: [(isize, isize); 2] = [(1, 0), (1, 1)];

/// The lines of one direction across the slice: each a list of (row, col) in walking order.
/// Directions step posteriorly (`dr` = 1): lines enter through the top edge, and for oblique
/// directions also through the side they come from.
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

/// One family of parallel lines across the slice, walked in one direction.
struct Family {
    /// Each line: (row, col) in walking order.
    lines: Vec<Vec<(usize, usize)>>,
    /// Length of one step along a line (mm).
    step_mm: f64,
    /// Distance between neighbouring lines (mm).
    pitch_mm: f64,
    /// For every pixel of the slice (row-major): its line and its position on it.
    place: Vec<(u32, u32)>,
}

impl Family {
    fn new(rows: usize, cols: usize, spacing_mm: [f64; 3], (dr, dc): (isize, isize)) -> Self {
        let [_, sr, sc] = spacing_mm;
        let step_mm = ((dr as f64 * sr).powi(2) + (dc as f64 * sc).powi(2)).sqrt();
        let pitch_mm = if dc == 0 { sc } else { sr * sc / step_mm };
        let lines = lines(rows, cols, (dr, dc));
        let mut place = vec![(0, 0); rows * cols];
        for (j, line) in lines.iter().enumerate() {
            for (pos, &(r, c)) in line.iter().enumerate() {
                place[r * cols + c] = (j as u32, pos as u32);
            }
        }
        Family { lines, step_mm, pitch_mm, place }
    }
}

/// One slice's walks along one family, and the rib hits among them.
struct SliceWalks {
    walks: Vec<Walk>,
    /// Depth of the rib hit behind the lung's edge (mm), for lines whose first bone beyond the
    /// lung is a rib (far enough from the midline).
    rib_depth: Vec<Option<f64>>,
    /// Lower envelope of `rib_depth` across the lines ([`ENVELOPE_SLOPE`] per mm, without
    /// [`OUTLIER_MM`]).
    depth_envelope: Vec<f64>,
    /// Lower envelope of the rib hits' positions along the lines (mm from the line's start).
    position_envelope: Vec<f64>,
    /// The same within [`NEIGHBOUR_WINDOW_MM`]: with the depths, the bound this slice gives its own
    /// and its neighbours' cage.
    position_near: Vec<f64>,
}

/// `min over o of (values[o] + slope * |j - o|)` for every `j`, by a forward and a backward
/// sweep (missing values are infinite); infinite where no value lies within `window` lines.
fn lower_envelope(values: impl Iterator<Item = Option<f64>>, slope: f64, window: usize) -> Vec<f64> {
    let values: Vec<Option<f64>> = values.collect();
    let mut env: Vec<f64> = values.iter().map(|v| v.unwrap_or(f64::INFINITY)).collect();
    let mut nearest: Vec<usize> = values.iter().map(|v| if v.is_some() { 0 } else { usize::MAX }).collect();
    for j in 1..env.len() {
        env[j] = env[j].min(env[j - 1] + slope);
        nearest[j] = nearest[j].min(nearest[j - 1].saturating_add(1));
    }
    for j in (0..env.len().saturating_sub(1)).rev() {
        env[j] = env[j].min(env[j + 1] + slope);
        nearest[j] = nearest[j].min(nearest[j + 1].saturating_add(1));
    }
    for (e, d) in env.iter_mut().zip(nearest) {
        if d > window {
            *e = f64::INFINITY;
        }
    }
    env
}

/// Runs `f` for every slice, the slices shared among the available cores, results in slice order.
pub(crate) fn per_slice<T: Send>(slices: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    map_in_parallel((0..slices).collect(), f)
}

/// Runs `f(k, chunk)` for every chunk `k` of `plane` elements of `volume` (the last one shorter
/// where `plane` does not divide its length), mutably, the chunks shared among the available
/// cores; results in chunk order.
pub(crate) fn per_slice_mut<V: Send, T: Send>(
    volume: &mut [V],
    plane: usize,
    f: impl Fn(usize, &mut [V]) -> T + Sync,
) -> Vec<T> {
    if plane == 0 {
        return Vec::new();
    }
    map_in_parallel(volume.chunks_mut(plane).enumerate().collect(), |(k, slice)| f(k, slice))
}

/// Elements per chunk of the whole-volume passes ([`binary`], [`count_set`]) shared among the
/// cores.
const CHUNK: usize = 1 << 20;

/// `mask` as 0/1 (non-zero = 1), on the available cores.
fn binary(mask: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; mask.len()];
    per_slice_mut(&mut out, CHUNK, |k, chunk| {
        for (o, &v) in chunk.iter_mut().zip(&mask[k * CHUNK..]) {
            *o = u8::from(v != 0);
        }
    });
    out
}

/// The non-zero elements of `mask`, counted on the available cores.
fn count_set(mask: &[u8]) -> usize {
    map_in_parallel(mask.chunks(CHUNK).collect(), |chunk| chunk.iter().filter(|&&v| v != 0).count()).into_iter().sum()
}

/// The 4-connected neighbours of pixel `p` of a `[rows, cols]` slice (row-major) inside it.
pub(crate) fn neighbours4(p: usize, rows: usize, cols: usize) -> impl Iterator<Item = usize> {
    let (r, c) = (p / cols, p % cols);
    [(r > 0).then(|| p - cols), (r + 1 < rows).then(|| p + cols), (c > 0).then(|| p - 1), (c + 1 < cols).then(|| p + 1)]
        .into_iter()
        .flatten()
}

/// Walks every line of a family from the lung's first voxel: where the lung ends, the first
/// bone and the first fat beyond it.
fn walk_slice(family: &Family, cols: usize, col_mm: f64, hu: &[f32], lung: &[u8], midline: f64) -> SliceWalks {
    let mm = |steps: usize| steps as f64 * family.step_mm;
    let at = |(r, c): (usize, usize)| r * cols + c;
    // each line's first and last lung voxel, in one pass over the slice
    let mut firsts = vec![usize::MAX; family.lines.len()];
    let mut lasts = vec![0usize; family.lines.len()];
    for (r, span) in row_spans(lung, cols).enumerate() {
        let Some((c0, c1)) = span else { continue };
        for c in (c0..=c1).filter(|&c| lung[r * cols + c] != 0) {
            let (j, pos) = family.place[r * cols + c];
            firsts[j as usize] = firsts[j as usize].min(pos as usize);
            lasts[j as usize] = lasts[j as usize].max(pos as usize);
        }
    }
    let walks: Vec<Walk> = family
        .lines
        .iter()
        .zip(firsts.iter().zip(&lasts))
        .map(|(line, (&first, &last))| {
            let mut w = Walk::default();
            if first == usize::MAX {
                return w;
            }
            let (mut run_start, mut in_run) = (first, true);
            // a run that starts beyond the deepest layer behind the current exit is no air
            // bronchogram of that layer, however short: the thin crescent of lung behind the dome
            let mut run_beyond = false;
            let (mut fat_run, mut air_run): (Option<usize>, Option<usize>) = (None, None);
            for (j, &p) in line.iter().enumerate().skip(first + 1) {
                let i = at(p);
                let is_lung = lung[i] != 0;
                if is_lung && !in_run {
                    run_start = j;
                    in_run = true;
                    run_beyond = w.exit.is_some_and(|e| mm(j - e) > MAX_DEPTH_MM + 20.0);
                } else if !is_lung && in_run {
                    in_run = false;
                    if mm(j - run_start) >= MIN_LUNG_RUN_MM || run_start == first || run_beyond {
                        w = Walk { exit: Some(j), bone: None, fat: None };
                        (fat_run, air_run) = (None, None);
                    }
                }
                // past the line's last lung voxel no run starts and no exit moves: the walk ends
                // where nothing more can be found
                let Some(exit) = w.exit else {
                    if j > last {
                        break;
                    }
                    continue;
                };
                // beyond the deepest layer, nothing more is looked for behind this exit, but the
                // walk goes on: lung farther along the line (the crescent of lung behind the
                // diaphragm dome, past the spleen or the liver) gives a new exit
                if in_run || mm(j - exit) > MAX_DEPTH_MM + 20.0 {
                    if j > last {
                        break;
                    }
                    continue;
                }
                let v = hu[i];
                if v >= BONE_HU {
                    w.bone = Some(j);
                    break;
                }
                if (FAT_HU[0]..=FAT_HU[1]).contains(&v) && mm(j - exit) > PARTIAL_VOLUME_MM {
                    let start = *fat_run.get_or_insert(j);
                    if w.fat.is_none() && mm(j - start + 1) >= FAT_STOP_MM && j - start + 1 >= FAT_STOP_SAMPLES {
                        w.fat = Some(start);
                    }
                } else {
                    fat_run = None;
                }
                // air that is not this lung, wider than an air bronchogram: bowel or stomach gas
                // below the diaphragm, the other lung, outside: not the pleural cavity
                if v < AIR_HU {
                    let start = *air_run.get_or_insert(j);
                    if w.fat.is_none() && mm(j - start + 1) >= AIR_STOP_MM {
                        w.fat = Some(start);
                    }
                } else {
                    air_run = None;
                }
            }
            w
        })
        .collect();
    let rib_depth = walks
        .iter()
        .zip(&family.lines)
        .map(|(w, line)| match (w.exit, w.bone) {
            (Some(e), Some(b)) if (line[b].1 as f64 - midline).abs() * col_mm >= RIB_MIN_LATERAL_MM => Some(mm(b - e)),
            _ => None,
        })
        .collect::<Vec<Option<f64>>>();
    let per_line = ENVELOPE_SLOPE * family.pitch_mm;
    let window = (SMOOTH_WINDOW_MM / family.pitch_mm).round() as usize;
    let depth_envelope = lower_envelope(rib_depth.iter().copied(), per_line, window);
    // the rib hits' positions along the lines (mm from the line's start)
    let positions: Vec<Option<f64>> =
        walks.iter().zip(&rib_depth).map(|(w, d)| Some(w.exit? as f64 * family.step_mm + (*d)?)).collect();
    let position_envelope = lower_envelope(positions.iter().copied(), per_line, window);
    let position_near =
        lower_envelope(positions.into_iter(), per_line, (NEIGHBOUR_WINDOW_MM / family.pitch_mm).round() as usize);
    SliceWalks { walks, rib_depth, depth_envelope, position_envelope, position_near }
}

/// The pixels of slice `k` to add to lung `side` (`other`: the other lung): indices within the
/// slice. `walks` holds every slice's walks.
#[allow(clippy::too_many_arguments)]
fn fill_slice(
    g: &Geometry,
    k: usize,
    families: &[Family],
    walks: &[[Vec<SliceWalks>; 2]],
    side: usize,
    hu: &[f32],
    lung: &[u8],
    other: &[u8],
    midline: f64,
    options: Options,
) -> Vec<u32> {
    let [slices, rows, cols] = g.shape;
    let [sz, sr, sc] = g.spacing_mm;
    let area = lung.iter().filter(|&&v| v != 0).count() as f64 * sr * sc;
    if area < 200.0 {
        return Vec::new();
    }
    // neighbouring slices whose rib hits bound this slice's cage
    let reach = (ENVELOPE_Z_MM / sz).floor() as usize;
    let near: Vec<usize> = (k.saturating_sub(reach)..=(k + reach).min(slices - 1)).collect();
    let mut fill = vec![false; rows * cols];
    for (d, family) in families.iter().enumerate() {
        let here = &walks[k][side][d];
        let neighbours: Vec<(f64, &SliceWalks)> =
            near.iter().map(|&o| (o.abs_diff(k) as f64 * sz, &walks[o][side][d])).collect();
        fill_direction(g, family, here, &neighbours, hu, lung, other, midline, options, &mut fill);
    }
    // the fill's bounding box (rows holding any fill, then their columns)
    let filled_rows: Vec<usize> = (0..rows).filter(|&r| fill[r * cols..(r + 1) * cols].contains(&true)).collect();
    let (Some(&r0), Some(&r1)) = (filled_rows.first(), filled_rows.last()) else { return Vec::new() };
    let (mut c0, mut c1) = (usize::MAX, 0);
    for &r in &filled_rows {
        let row = &fill[r * cols..(r + 1) * cols];
        c0 = c0.min(row.iter().position(|&v| v).unwrap_or(usize::MAX));
        c1 = c1.max(row.iter().rposition(|&v| v).unwrap_or(0));
    }
    let (r0, c0) = (r0.saturating_sub(2), c0.saturating_sub(2));
    let (r1, c1) = ((r1 + 2).min(rows - 1), (c1 + 2).min(cols - 1));
    let (bw, bh) = (c1 - c0 + 1, r1 - r0 + 1);
    let at = |q: usize| (r0 + q / bw) * cols + c0 + q % bw;
    let fill: Vec<bool> = (0..bw * bh).map(|q| fill[at(q)]).collect();
    // an opening removes the thin rims a normal lung leaves against the wall; it judges a layer
    // with its front that the model's mask took in (dense tissue inside the mask), not only the
    // strip left behind it
    let with_front: Vec<bool> = (0..bw * bh).map(|q| fill[q] || (lung[at(q)] != 0 && hu[at(q)] > DENSE_HU)).collect();
    let radius = (OPENING_MM / sr.min(sc)).ceil().max(1.0) as usize;
    let opened: Vec<bool> = open(&with_front, bw, bh, radius).into_iter().zip(&fill).map(|(o, &f)| o && f).collect();
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

/// Marks, along the lines of one family, what lies between the lung's edge and the rib cage.
///
/// The cage is followed as its depth behind the lung's edge: a normal lung lies against it, so
/// the depth is a few mm and follows the lung's outline where no rib is seen (intercostal
/// spaces, the costovertebral region); a consolidated layer deepens it where it lies.
#[allow(clippy::too_many_arguments)]
fn fill_direction(
    g: &Geometry,
    family: &Family,
    here: &SliceWalks,
    neighbours: &[(f64, &SliceWalks)],
    hu: &[f32],
    lung: &[u8],
    other: &[u8],
    midline: f64,
    options: Options,
    fill: &mut [bool],
) {
    let cols = g.shape[2];
    let sc = g.spacing_mm[2];
    let (lines, step_mm, pitch_mm) = (&family.lines, family.step_mm, family.pitch_mm);
    let lateral_mm = |c: usize| (c as f64 - midline).abs() * sc;
    let at = |(r, c): (usize, usize)| r * cols + c;
    let n = lines.len();
    let rib = &here.rib_depth;

    // a hit farther than its neighbours on both sides allow went through an intercostal space
    // (to the scapula, the spine, or a rib below or above the lung's edge): the cage itself is
    // smooth, so this is judged on the hits' positions, not on their depth behind the lung (a
    // consolidated layer makes the depth vary); an isolated hit, with no other within the
    // window, is no rib line either
    let position = |j: usize| -> Option<f64> { Some(here.walks[j].exit? as f64 * step_mm + rib[j]?) };
    let per_line = CAGE_SLOPE * pitch_mm;
    // the nearest allowance from the hits strictly before and strictly after each line
    let mut before = vec![f64::INFINITY; n];
    for j in 1..n {
        before[j] = (before[j - 1] + per_line).min(position(j - 1).map_or(f64::INFINITY, |p| p + per_line));
    }
    let mut after = vec![f64::INFINITY; n];
    for j in (0..n.saturating_sub(1)).rev() {
        after[j] = (after[j + 1] + per_line).min(position(j + 1).map_or(f64::INFINITY, |p| p + per_line));
    }
    // the lower envelope of the hits of this slice and its neighbours: no depth behind the lung
    // beyond what a nearby hit allows (where no rib is seen, the cage follows the lung's
    // outline); each slice bounds by the looser of its hits' depths (wide window) and their
    // positions on the nearest lines: where a layer thickens or ends, the lung's edge moves
    // within a few mm across lines and slices, the cage does not
    let envelopes: Vec<f64> = (0..n)
        .map(|j| {
            let exit_mm = here.walks[j].exit.map_or(0.0, |e| e as f64 * step_mm);
            neighbours
                .iter()
                .map(|(dz, w)| {
                    // the looser of the two: where a slice has no rib hit within
                    // NEIGHBOUR_WINDOW_MM of these lines (infinite position bound), it does not
                    // bound them at all; its depths, from hits up to SMOOTH_WINDOW_MM away, would
                    // carry the lung's edge of elsewhere (measured: a depth cap there cut
                    // dependent layers and let organ pieces grow into regions)
                    let by_depth = w.depth_envelope[j] + ENVELOPE_SLOPE * dz + OUTLIER_MM;
                    by_depth.max(w.position_near[j] - exit_mm + ENVELOPE_SLOPE * dz + OUTLIER_MM)
                })
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    let envelope = |j: usize| envelopes[j];
    let cleaned: Vec<Option<f64>> = (0..n)
        .map(|j| {
            let (d, p) = (rib[j]?, position(j)?);
            // ... unless the neighbouring slices see the cage at least as deep along this line:
            // seen along parallel lines, the curve of the cage behind the lung's most posterior
            // part is steeper than CAGE_SLOPE, and its hits there are deeper than those on both
            // sides (measured on the phantom: 20 mm over 28 mm), while a line through an
            // intercostal space reaches deeper than the rib the next slices see on it
            (p <= before[j] + OUTLIER_MM || p <= after[j] + OUTLIER_MM || d <= envelope(j)).then_some(d)
        })
        .collect();
    // the nearest position of the cage seen in the neighbouring slices (their rib hits'
    // positions along the same lines: the cage is smooth through the slices)
    let cage_near = |j: usize| -> f64 {
        neighbours
            .iter()
            .filter(|(dz, _)| *dz > 0.0)
            .map(|(dz, w)| w.position_envelope[j] + ENVELOPE_SLOPE * dz + OUTLIER_MM)
            .fold(f64::INFINITY, f64::min)
    };
    let gap = (MAX_RIB_GAP_MM / pitch_mm).round() as usize;
    // the nearest line with a cleaned hit strictly before and strictly after each line
    let mut nearest_before = vec![None; n];
    for j in 1..n {
        nearest_before[j] = if cleaned[j - 1].is_some() { Some(j - 1) } else { nearest_before[j - 1] };
    }
    let mut nearest_after = vec![None; n];
    for j in (0..n.saturating_sub(1)).rev() {
        nearest_after[j] = if cleaned[j + 1].is_some() { Some(j + 1) } else { nearest_after[j + 1] };
    }
    let depth = |j: usize| -> Option<f64> {
        let d = if let Some(d) = cleaned[j] {
            d
        } else {
            // (offset, depth) of the nearest hit within `gap` lines on each side
            let before = nearest_before[j].filter(|&b| j - b <= gap).and_then(|b| Some((j - b, cleaned[b]?)));
            let after = nearest_after[j].filter(|&a| a - j <= gap).and_then(|a| Some((a - j, cleaned[a]?)));
            match (before, after) {
                (Some((ob, db)), Some((oa, da))) if ob + oa <= gap => db + (da - db) * ob as f64 / (ob + oa) as f64,
                // at the end of the rib line: the nearest hit, when close
                (Some((o, d)), None) | (None, Some((o, d))) if o as f64 * pitch_mm <= 10.0 => d,
                // no rib seen in this slice around this line (thick slices cut the ribs
                // between their segments): where the neighbouring slices saw the cage
                (None, None) => here.walks[j].exit.map_or(f64::INFINITY, |e| cage_near(j) - e as f64 * step_mm),
                _ => return None,
            }
        };
        let d = d.min(envelope(j));
        d.is_finite().then_some(d)
    };

    for (j, line) in lines.iter().enumerate() {
        let w = here.walks[j];
        let (Some(exit), Some(depth)) = (w.exit, depth(j)) else { continue };
        let mut to = exit as f64 * step_mm + depth - WALL_MARGIN_MM;
        if let Some(f) = w.fat {
            to = to.min(f as f64 * step_mm);
        }
        let thickness = to - exit as f64 * step_mm;
        // whether the sample at `o` on this line is air or ground glass (below -300 HU)
        let beside_air = |o: Option<usize>| o.and_then(|o| line.get(o)).is_some_and(|&q| hu[at(q)] < DENSE_HU);
        // deeper than a lung layer can be: the wall seen is not this lung's (e.g. through the liver)
        if !(MIN_DEPTH_MM..=MAX_DEPTH_MM).contains(&thickness) {
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
            if other[i] != 0 || lateral_mm(p.1) < MEDIAL_EXCLUSION_MM {
                continue;
            }
            // beyond the lung's edge, a short run of lung is an air bronchogram: part of the
            // layer (its air tells consolidation from fluid), already lung, never opacity
            if lung[i] != 0 {
                if v < AIR_HU {
                    fill[i] = true;
                }
                continue;
            }
            // with `air_tissue_ramp`, fat-band HU next to air along the line is a blend of air and
            // tissue (the ramp from an air bronchogram, or from the ground glass in front, to
            // consolidation): part of the layer, not fat. Skipped, it split a thin layer into
            // strips the opening removed (phantom, 10 mm layer: 20 mL of its truth)
            if (FAT_HU[0]..=FAT_HU[1]).contains(&v)
                && (pos - exit) as f64 * step_mm > PARTIAL_VOLUME_MM
                && !(options.air_tissue_ramp && (beside_air(pos.checked_sub(1)) || beside_air(Some(pos + 1))))
            {
                continue;
            }
            fill[i] = true;
        }
    }
}

/// Binary opening with a square of half-width `radius` (erosion then dilation, separable).
pub(crate) fn open(m: &[bool], w: usize, h: usize, radius: usize) -> Vec<bool> {
    let eroded = box_filter(m, w, h, radius, true);
    box_filter(&eroded, w, h, radius, false)
}

/// Separable box erosion (`all`) or dilation (any); outside the box counts as false.
pub(crate) fn box_filter(m: &[bool], w: usize, h: usize, radius: usize, all: bool) -> Vec<bool> {
    if w == 0 || h == 0 {
        return Vec::new();
    }
    // one line at a time (a row, or a column), with a running count of the set pixels in the
    // window: O(1) per pixel whatever the radius
    let pass = |src: &[bool], horizontal: bool| -> Vec<bool> {
        let mut dst = vec![false; w * h];
        let (lines, len) = if horizontal { (h, w) } else { (w, h) };
        let at = |line: usize, pos: usize| if horizontal { line * w + pos } else { pos * w + line };
        for line in 0..lines {
            // set pixels in [pos - radius, pos + radius] clipped to the line
            let mut count = (0..=radius.min(len - 1)).filter(|&p| src[at(line, p)]).count();
            for pos in 0..len {
                if pos > 0 {
                    if pos + radius < len && src[at(line, pos + radius)] {
                        count += 1;
                    }
                    if pos > radius && src[at(line, pos - radius - 1)] {
                        count -= 1;
                    }
                }
                dst[at(line, pos)] =
                    if all { pos >= radius && pos + radius < len && count == 2 * radius + 1 } else { count > 0 };
            }
        }
        dst
    };
    let a = pass(m, true);
    pass(&a, false)
}

/// A fixed-size set of voxel indices.
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    pub(crate) fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }

    pub(crate) fn get(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }

    pub(crate) fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
}

/// 26-connected components of the voxels for which `candidate` holds that contain at least one
/// of `seeds` (voxel indices, each component sorted).
pub(crate) fn components(candidate: &dyn Fn(usize) -> bool, shape: [usize; 3], seeds: &[usize]) -> Vec<Vec<u32>> {
    let [s, r, c] = shape;
    let mut visited = Bits::new(s * r * c);
    let mut comps: Vec<Vec<u32>> = Vec::new();
    let mut stack = Vec::new();
    for &seed in seeds {
        if visited.get(seed) || !candidate(seed) {
            continue;
        }
        let mut comp = Vec::new();
        visited.set(seed);
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
                        if !visited.get(j) && candidate(j) {
                            visited.set(j);
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
fn region_stats(region: &[u32], hu: &[f32], shape: [usize; 3], candidate: &dyn Fn(usize) -> bool) -> RegionStats {
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
        let Some((r0, r1, c0, c1)) = pixel_box(pixels.iter().copied(), cols) else { continue };
        // flood the complement from the border of the box (1 pixel larger)
        let (w, h) = (c1 - c0 + 3, r1 - r0 + 3);
        let mut inside = vec![false; w * h];
        for &p in &pixels {
            inside[(p / cols - r0 + 1) * w + (p % cols - c0 + 1)] = true;
        }
        let outside = outside_of(|q| inside[q], w, h);
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                let q = y * w + x;
                if outside[q] {
                    continue;
                }
                let i = k * plane + (y + r0 - 1) * cols + (x + c0 - 1);
                // holes that are themselves candidates of another region are not this one's
                if !inside[q] && candidate(i) {
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
        median_soft_hu: median(&mut soft).map_or(0.0, f64::from),
        air_fraction: if total > 0 { air as f64 / total as f64 } else { 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: [usize; 3] = [12, 160, 200];
    const SPACING: [f64; 3] = [5.0, 1.0, 1.0];

    /// A box chest at 1 mm: soft tissue (40 HU) in air, a ring of rib segments (600 HU)
    /// interrupted every other 12 mm, a spine at the midline, and in each half a lung whose
    /// posterior `layer_mm` is `layer_hu` (with air tubes every 10 mm when `bronchograms`).
    /// Returns (hu, model lung masks made of the aerated part, truth layer voxels per side).
    fn chest(layer_mm: usize, layer_hu: f32, bronchograms: bool) -> (Vec<f32>, [Vec<u8>; 2], [usize; 2]) {
        let [s, rows, cols] = SHAPE;
        let mut hu = vec![-1000.0f32; s * rows * cols];
        let mut lungs = [vec![0u8; hu.len()], vec![0u8; hu.len()]];
        let mut layer = [0usize; 2];
        for k in 0..s {
            for r in 0..rows {
                for c in 0..cols {
                    let i = (k * rows + r) * cols + c;
                    let (y, x) = (r as f64 - 80.0, c as f64 - 100.0);
                    let body = (x / 95.0).powi(2) + (y / 75.0).powi(2);
                    if body > 1.0 {
                        continue;
                    }
                    hu[i] = 40.0;
                    // ribs: a ring 8 mm inside the skin, in 12 mm segments
                    let ring = (x / 87.0).powi(2) + (y / 67.0).powi(2);
                    let angle = y.atan2(x).to_degrees().rem_euclid(360.0);
                    if (0.86..=1.0).contains(&ring) && ((angle / 12.0) as usize).is_multiple_of(2) {
                        hu[i] = 600.0;
                    }
                    if x.abs() < 12.0 && y > 35.0 && y < 60.0 {
                        hu[i] = 500.0; // spine
                    }
                    // lungs: inside the ring, away from the mediastinum (|x| > 25)
                    let inside = (x / 82.0).powi(2) + (y / 62.0).powi(2) <= 1.0;
                    if inside && x.abs() > 25.0 {
                        let side = usize::from(x < 0.0); // cols right -> left: low cols are the right lung
                                                         // the posterior edge of the cavity along this column
                        let back = 62.0 * (1.0 - (x / 82.0).powi(2)).max(0.0).sqrt();
                        if layer_mm > 0 && y > back - layer_mm as f64 {
                            let tube = bronchograms && (c % 10 < 2) && (r % 7 < 2);
                            hu[i] = if tube { -900.0 } else { layer_hu };
                            layer[side] += 1;
                        } else {
                            hu[i] = -850.0;
                            lungs[side][i] = 1;
                        }
                    }
                }
            }
        }
        (hu, lungs, layer)
    }

    fn count(m: &[u8]) -> usize {
        m.iter().filter(|&&v| v != 0).count()
    }

    /// One posterior walk down column 5 of a 1-row-per-mm slice whose column holds `profile`
    /// (HU and lung flag per row, from the top).
    fn walk_column(profile: &[(f32, bool)]) -> Walk {
        let (rows, cols) = (profile.len(), 10);
        let family = Family::new(rows, cols, [5.0, 1.0, 1.0], (1, 0));
        let mut hu = vec![40.0f32; rows * cols];
        let mut lung = vec![0u8; rows * cols];
        for (r, &(v, l)) in profile.iter().enumerate() {
            hu[r * cols + 5] = v;
            lung[r * cols + 5] = u8::from(l);
        }
        walk_slice(&family, cols, 1.0, &hu, &lung, 0.0).walks[5]
    }

    #[test]
    fn a_thin_crescent_of_lung_far_behind_the_exit_is_a_new_exit_a_short_run_near_it_is_not() {
        let run = |n: usize, v: f32, l: bool| std::iter::repeat_n((v, l), n);
        // lung in front of the dome, 90 mm of liver, a 5 mm crescent, 10 mm of layer, a rib
        let profile: Vec<(f32, bool)> = run(20, -850.0, true)
            .chain(run(90, 60.0, false))
            .chain(run(5, -850.0, true))
            .chain(run(10, 30.0, false))
            .chain(run(5, 600.0, false))
            .collect();
        let w = walk_column(&profile);
        assert_eq!(w.exit, Some(115), "the crescent's end is the lung's edge: {w:?}");
        assert_eq!(w.bone, Some(125));
        // the same 5 mm of air 20 mm behind the lung's edge: an air bronchogram in the layer
        let profile: Vec<(f32, bool)> = run(20, -850.0, true)
            .chain(run(20, 30.0, false))
            .chain(run(5, -850.0, true))
            .chain(run(10, 30.0, false))
            .chain(run(5, 600.0, false))
            .collect();
        let w = walk_column(&profile);
        assert_eq!(w.exit, Some(20), "{w:?}");
        assert_eq!(w.bone, Some(55));
    }

    #[test]
    fn the_ramp_from_ground_glass_to_consolidation_does_not_stop_the_fill_fat_does() {
        let run = |n: usize, v: f32, l: bool| std::iter::repeat_n((v, l), n);
        // lung, 4 mm of ground glass outside the mask, two samples of the ramp in the fat band,
        // consolidation, a rib
        let ramp: Vec<(f32, bool)> = run(20, -850.0, true)
            .chain(run(4, -520.0, false))
            .chain([(-150.0, false), (-60.0, false)])
            .chain(run(10, 30.0, false))
            .chain(run(5, 600.0, false))
            .collect();
        let w = walk_column(&ramp);
        assert_eq!((w.exit, w.fat, w.bone), (Some(20), None, Some(36)), "{w:?}");
        // 3 mm of extrapleural fat behind the same layer stop it
        let fat: Vec<(f32, bool)> = run(20, -850.0, true)
            .chain(run(10, 30.0, false))
            .chain(run(3, -100.0, false))
            .chain(run(5, 600.0, false))
            .collect();
        let w = walk_column(&fat);
        assert_eq!((w.exit, w.fat, w.bone), (Some(20), Some(30), Some(33)), "{w:?}");
    }

    /// A 10 mm layer whose air tubes have a blurred edge in the fat band (-100 HU on the rows
    /// before and after each tube): without `air_tissue_ramp` the walks skip those samples, the
    /// fill of the tubes' columns is full of holes and the opening takes it away; with it, the
    /// ramp is part of the layer and the whole layer is added.
    #[test]
    fn the_fat_band_ramp_around_air_bronchograms_is_part_of_the_layer() {
        let (mut hu, [left, right], _) = chest(10, 35.0, true);
        let [s, rows, cols] = SHAPE;
        let tube_column = |i: usize| (i % cols) % 10 < 2 && left[i] == 0 && right[i] == 0;
        for k in 0..s {
            for r in 1..rows - 1 {
                for c in 0..cols {
                    let i = (k * rows + r) * cols + c;
                    let beside = |j: usize| hu[j] == -900.0 && left[j] == 0 && right[j] == 0;
                    if hu[i] == 35.0 && (beside(i - cols) || beside(i + cols)) {
                        hu[i] = -100.0;
                    }
                }
            }
        }
        let none = vec![0u8; hu.len()];
        let added_in_tube_columns = |ramp: bool| {
            let options = Options { air_tissue_ramp: ramp, ..Options::default() };
            let r = refine_with(&hu, SHAPE, SPACING, &left, &right, &none, options).expect("refine");
            (0..hu.len())
                .filter(|&i| tube_column(i) && hu[i] > -1000.0 && (r.left_lung[i] != 0 || r.right_lung[i] != 0))
                .count()
        };
        let layer_in_tube_columns =
            (0..hu.len()).filter(|&i| tube_column(i) && [35.0, -100.0, -900.0].contains(&hu[i])).count();
        let (without, with) = (added_in_tube_columns(false), added_in_tube_columns(true));
        assert!(
            (without as f64) < 0.3 * layer_in_tube_columns as f64,
            "without the ramp: {without} of {layer_in_tube_columns}"
        );
        assert!(with as f64 >= 0.7 * layer_in_tube_columns as f64, "with the ramp: {with} of {layer_in_tube_columns}");
    }

    #[test]
    fn a_healthy_chest_is_left_alone() {
        let (hu, [left, right], _) = chest(0, 0.0, false);
        let none = vec![0u8; hu.len()];
        let r = refine(&hu, SHAPE, SPACING, &left, &right, &none).expect("refine");
        assert_eq!(count(&r.left_lung), count(&left));
        assert_eq!(count(&r.right_lung), count(&right));
        assert_eq!(count(&r.opacity), 0);
        assert!(r.regions.is_empty(), "{:?}", r.regions);
    }

    /// Asserts that none of `voxels` of [`chest`] lies beyond the rib ring's outer edge or within
    /// 15 mm of the midline. (This chest's mediastinum is one block of 40 HU with no fat plane,
    /// and the part of it within reach of a consolidation's bronchograms is taken with it:
    /// lobar.rs. The ring's gaps are intercostal spaces: the wall closes them, but not their
    /// inner half.)
    fn within_ribs_off_the_midline(voxels: impl Iterator<Item = usize>) {
        let [_, rows, cols] = SHAPE;
        for i in voxels {
            let (y, x) = (((i / cols) % rows) as f64 - 80.0, (i % cols) as f64 - 100.0);
            assert!((x / 87.0).powi(2) + (y / 67.0).powi(2) < 1.0, "({x}, {y}) beyond the ribs");
            assert!(x.abs() >= 15.0, "({x}, {y}) at the midline");
        }
    }

    #[test]
    fn a_dependent_consolidation_becomes_lung_and_opacity() {
        let (hu, [left, right], layer) = chest(20, 35.0, true);
        let none = vec![0u8; hu.len()];
        let options = Options { follow_bronchograms: true, ..Options::default() };
        let r = refine_with(&hu, SHAPE, SPACING, &left, &right, &none, options).expect("refine");
        for (side, (before, after)) in [(&left, &r.left_lung), (&right, &r.right_lung)].into_iter().enumerate() {
            // the layer is the 35 HU and its air tubes outside the model's lungs
            let in_layer = |i: usize| hu[i] == 35.0 || (hu[i] == -900.0 && left[i] == 0 && right[i] == 0);
            let added: Vec<usize> = (0..hu.len()).filter(|&i| after[i] != 0 && before[i] == 0).collect();
            let of_layer = added.iter().filter(|&&i| in_layer(i)).count();
            // the layer's medial ends (within 25 mm of the midline) are not filled by design
            assert!(
                of_layer as f64 >= 0.7 * layer[side] as f64,
                "side {side}: {of_layer} of the layer's {} voxels added",
                layer[side]
            );
            // beyond the layer: never the chest wall outside the ribs, never within 15 mm of the
            // midline
            within_ribs_off_the_midline(added.iter().copied().filter(|&i| !in_layer(i)));
        }
        assert!(r.regions.iter().all(|g| g.kind == DenseKind::Consolidation), "{:?}", r.regions);
        assert!(count(&r.opacity) > 0 && count(&r.effusion_left) == 0);
    }

    /// The chest with its lowest `below` slices all dense (the posterior recess behind the
    /// dome): the lung there becomes `layer_hu` (air tubes kept where `bronchograms`), the
    /// model's lung masks empty. Returns (hu, lungs, layer voxels per slice of those slices).
    fn recess(layer_hu: f32, bronchograms: bool, below: usize) -> (Vec<f32>, [Vec<u8>; 2], usize) {
        let (mut hu, mut lungs, _) = chest(20, layer_hu, bronchograms);
        let plane = SHAPE[1] * SHAPE[2];
        let per_slice = (0..plane).filter(|&p| hu[p] == layer_hu).count();
        for i in 0..below * plane {
            if lungs[0][i] != 0 || lungs[1][i] != 0 {
                hu[i] = layer_hu;
                lungs[0][i] = 0;
                lungs[1][i] = 0;
            }
        }
        (hu, lungs, per_slice)
    }

    /// A lobe consolidated from the wall to the front in the lowest `below` slices: every lung
    /// voxel there 35 HU, with air tubes every 10 mm where
    /// `bronchograms`, the model's masks empty there; a 20 mm layer with tubes above it. Returns
    /// (hu, model lungs, the consolidated lung's voxels in those slices).
    fn consolidated_base(bronchograms: bool, below: usize) -> (Vec<f32>, [Vec<u8>; 2], usize) {
        let (mut hu, mut lungs, _) = chest(20, 35.0, true);
        let [_, rows, cols] = SHAPE;
        let mut truth = 0;
        for i in 0..below * rows * cols {
            if lungs[0][i] != 0 || lungs[1][i] != 0 || hu[i] == 35.0 || hu[i] == -900.0 {
                let (r, c) = ((i / cols) % rows, i % cols);
                hu[i] = if bronchograms && c % 10 < 2 && r % 7 < 2 { -900.0 } else { 35.0 };
                lungs[0][i] = 0;
                lungs[1][i] = 0;
                truth += 1;
            }
        }
        (hu, lungs, truth)
    }

    #[test]
    fn a_consolidated_lobe_is_followed_through_its_air_bronchograms_and_only_through_them() {
        // 30 mm (the lung above must be taller than the apical cap's 20 mm); the carry reaches
        // that far down, but only under the layer's footprint
        let below = 6;
        let plane = SHAPE[1] * SHAPE[2];
        let none = vec![0u8; SHAPE.iter().product()];
        let base = |r: &Refined| count(&r.left_lung[..below * plane]) + count(&r.right_lung[..below * plane]);
        let follow = Options { follow_bronchograms: true, ..Options::default() };
        let (hu, [left, right], truth) = consolidated_base(true, below);
        let walks = base(&refine(&hu, SHAPE, SPACING, &left, &right, &none).expect("refine"));
        let followed = refine_with(&hu, SHAPE, SPACING, &left, &right, &none, follow).expect("refine");
        let lobe = |i: usize| i < below * plane && (hu[i] == 35.0 || hu[i] == -900.0);
        let lung = |i: usize| followed.left_lung[i] != 0 || followed.right_lung[i] != 0;
        let found = (0..hu.len()).filter(|&i| lobe(i) && lung(i)).count();
        // the walks and the carry reach the part under the layer above; followed through its
        // bronchi, nearly all of it (the medial 15 mm by design)
        assert!(walks as f64 <= 0.6 * truth as f64, "walks alone {walks} of {truth}");
        assert!(found as f64 >= 0.8 * truth as f64, "followed {found} of {truth} (walks {walks})");
        within_ribs_off_the_midline((0..below * plane).filter(|&i| lung(i) && !lobe(i)));
        assert!(followed.regions.iter().all(|g| g.kind == DenseKind::Consolidation), "{:?}", followed.regions);
        // the regions say how much was followed (the walks alone follow nothing)
        let followed_ml: f64 = followed.regions.iter().map(|g| g.followed_ml).sum();
        let voxel_ml = SPACING.iter().product::<f64>() / 1000.0;
        assert!(followed_ml >= (found - walks) as f64 * voxel_ml * 0.9, "{followed_ml} mL followed");
        // the same base without air bronchograms: followed only within the reach (20 mm) of the
        // bronchograms above it; its lowest two slices (25 and 30 mm below them) as without the
        // step, while with bronchograms they were followed
        let (hu, [left, right], _) = consolidated_base(false, below);
        let walks = refine(&hu, SHAPE, SPACING, &left, &right, &none).expect("refine");
        let airless = refine_with(&hu, SHAPE, SPACING, &left, &right, &none, follow).expect("refine");
        let lowest = |r: &Refined| count(&r.left_lung[..2 * plane]) + count(&r.right_lung[..2 * plane]);
        assert_eq!(lowest(&airless), lowest(&walks));
        assert!(lowest(&followed) as f64 >= 2.0 * lowest(&walks) as f64, "{} {}", lowest(&followed), lowest(&walks));
    }

    #[test]
    fn a_consolidated_layer_is_carried_into_the_recess_below_the_lung() {
        let below = 3;
        let plane = SHAPE[1] * SHAPE[2];
        let none = vec![0u8; SHAPE.iter().product()];
        let added_below = |r: &Refined| count(&r.left_lung[..below * plane]) + count(&r.right_lung[..below * plane]);
        // with air bronchograms: the layer continues where no walk starts
        let (hu, [left, right], per_slice) = recess(35.0, true, below);
        let r = refine(&hu, SHAPE, SPACING, &left, &right, &none).expect("refine");
        let carried = added_below(&r);
        assert!(
            carried as f64 >= 0.6 * (below * per_slice) as f64 && carried <= below * plane,
            "{carried} voxels carried for {} of the layer's footprint",
            below * per_slice
        );
        assert!(r.regions.iter().all(|g| g.kind == DenseKind::Consolidation), "{:?}", r.regions);
        // an airless dense layer is carried as what it was called: indeterminate
        let (hu, [left, right], per_slice) = recess(45.0, false, below);
        let r = refine(&hu, SHAPE, SPACING, &left, &right, &none).expect("refine");
        let carried = added_below(&r);
        assert!(carried as f64 >= 0.6 * (below * per_slice) as f64, "{carried} voxels carried");
        assert!(count(&r.indeterminate[..below * plane]) == carried, "{:?}", r.regions);
        assert!(r.regions.iter().all(|g| g.kind == DenseKind::Indeterminate), "{:?}", r.regions);
        // fluid is carried as effusion, never lung
        let (hu, [left, right], per_slice) = recess(8.0, false, below);
        let r = refine(&hu, SHAPE, SPACING, &left, &right, &none).expect("refine");
        assert_eq!(added_below(&r), 0);
        let fluid = count(&r.effusion_left[..below * plane]) + count(&r.effusion_right[..below * plane]);
        assert!(fluid as f64 >= 0.6 * (below * per_slice) as f64, "{fluid} voxels of effusion carried");
    }

    #[test]
    fn a_lesion_the_model_kept_as_lung_is_opacity_where_it_continues_the_fill() {
        // a 20 mm layer whose front 8 mm the model kept, and a 10 mm one whose front 6 mm it kept:
        // the 4 mm strip behind it is thinner than the opening, which judges the layer whole
        for (layer_mm, kept_mm) in [(20, 8), (10, 6)] {
            kept_layer_is_opacity(layer_mm, kept_mm);
        }
    }

    fn kept_layer_is_opacity(layer_mm: usize, kept_mm: usize) {
        let (hu, mut lungs, layer) = chest(layer_mm, 35.0, false);
        // the model's masks take in the front of the dense layer, without calling it opacity
        let [s, rows, cols] = SHAPE;
        for k in 0..s {
            for c in 0..cols {
                let mask = &mut lungs[usize::from(c < 100)]; // low columns: the right lung
                let at = |r: usize| (k * rows + r) * cols + c;
                let Some(last) = (0..rows).rev().find(|&r| mask[at(r)] != 0) else { continue };
                for r in last + 1..(last + 1 + kept_mm).min(rows) {
                    if hu[at(r)] == 35.0 {
                        mask[at(r)] = 1;
                    }
                }
            }
        }
        let [left, right] = lungs;
        let none = vec![0u8; hu.len()];
        let r = refine(&hu, SHAPE, SPACING, &left, &right, &none).expect("refine");
        let dense_opacity = r.opacity.iter().zip(&hu).filter(|(o, v)| **o != 0 && **v == 35.0).count();
        let total = layer[0] + layer[1];
        assert!(
            dense_opacity as f64 >= 0.7 * total as f64,
            "{layer_mm} mm layer, {kept_mm} mm kept: {dense_opacity} of {total} layer voxels are opacity"
        );
    }

    #[test]
    fn per_slice_work_keeps_slice_order_and_covers_every_element() {
        // 1000 items over the cores: each result at its own index
        assert_eq!(per_slice(1000, |k| k * 3), (0..1000).map(|k| k * 3).collect::<Vec<_>>());
        assert!(per_slice(0, |k| k).is_empty());
        // chunks of 7 over 50 elements: 8 chunks, the last one of 1, every element written once
        let mut v = vec![0u32; 50];
        let lens = per_slice_mut(&mut v, 7, |k, chunk| {
            for (j, x) in chunk.iter_mut().enumerate() {
                *x += (k * 7 + j) as u32 + 1;
            }
            chunk.len()
        });
        assert_eq!(lens, vec![7, 7, 7, 7, 7, 7, 7, 1]);
        assert_eq!(v, (1..=50).collect::<Vec<u32>>());
        // whole-volume passes across several chunks
        let mask: Vec<u8> = (0..3 * CHUNK + 5).map(|i| [0u8, 2, 0, 255, 1][i % 5]).collect();
        let b = binary(&mask);
        assert_eq!(b.len(), mask.len());
        assert!(b.iter().zip(&mask).all(|(&b, &m)| b == u8::from(m != 0)));
        assert_eq!(count_set(&mask), 3 * (3 * CHUNK + 5) / 5);
    }

    #[test]
    fn the_box_filter_matches_its_definition() {
        // a pseudo-random mask, against erosion / dilation by a square computed pixel by pixel
        let (w, h) = (23, 17);
        let mut x = 12345u64;
        let m: Vec<bool> = (0..w * h)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                !(x >> 33).is_multiple_of(3)
            })
            .collect();
        for radius in 0..4 {
            for all in [true, false] {
                let got = box_filter(&m, w, h, radius, all);
                for y in 0..h {
                    for xx in 0..w {
                        let inside = |p: usize, len: usize| p >= radius && p + radius < len;
                        let window = (y.saturating_sub(radius)..=(y + radius).min(h - 1)).flat_map(|yy| {
                            (xx.saturating_sub(radius)..=(xx + radius).min(w - 1)).map(move |x2| (yy, x2))
                        });
                        let want = if all {
                            inside(xx, w) && inside(y, h) && window.clone().all(|(yy, x2)| m[yy * w + x2])
                        } else {
                            window.clone().any(|(yy, x2)| m[yy * w + x2])
                        };
                        assert_eq!(got[y * w + xx], want, "radius {radius}, erosion {all}, ({y}, {xx})");
                    }
                }
            }
        }
    }

    #[test]
    fn no_walk_starts_from_gas_the_model_took_for_lung() {
        // dense airless tissue behind the lungs: an indeterminate region behind each
        let (mut hu, [left, right], _) = chest(20, 40.0, false);
        let none = vec![0u8; hu.len()];
        let r = refine(&hu, SHAPE, SPACING, &left, &right, &none).expect("refine");
        assert!(r.regions.iter().any(|g| g.side == Lung::Left), "{:?}", r.regions);
        // the left "lung" is gas (-1000 HU: the stomach's bubble): nothing is found behind it
        for (v, &l) in hu.iter_mut().zip(&left) {
            if l != 0 {
                *v = -1000.0;
            }
        }
        let r = refine(&hu, SHAPE, SPACING, &left, &right, &none).expect("refine");
        assert!(r.regions.iter().all(|g| g.side == Lung::Right), "{:?}", r.regions);
        assert_eq!(count(&r.left_lung), count(&left));
    }

    #[test]
    fn an_airless_fluid_layer_is_effusion_not_lung() {
        let (hu, [left, right], layer) = chest(20, 8.0, false);
        let none = vec![0u8; hu.len()];
        let r = refine(&hu, SHAPE, SPACING, &left, &right, &none).expect("refine");
        assert_eq!(count(&r.left_lung), count(&left));
        assert_eq!(count(&r.opacity), 0);
        for (side, e) in [&r.effusion_left, &r.effusion_right].into_iter().enumerate() {
            assert!(count(e) as f64 >= 0.7 * layer[side] as f64, "side {side}: {} of {}", count(e), layer[side]);
        }
        assert!(r.regions.iter().all(|g| g.kind == DenseKind::Effusion), "{:?}", r.regions);
    }

    #[test]
    fn a_lung_much_smaller_than_the_other_is_said() {
        let (hu, [left, right], _) = chest(0, 0.0, false);
        // the right lung: only its slices' first rows of lung (a "white lung" the model missed)
        let small: Vec<u8> = right.iter().enumerate().map(|(i, &v)| u8::from(v != 0 && i % 10 == 0)).collect();
        let none = vec![0u8; hu.len()];
        // 15 mm slices: the left lung holds about 1 L
        let spacing = [15.0, 1.0, 1.0];
        let r = refine(&hu, SHAPE, spacing, &left, &small, &none).expect("refine");
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].starts_with("the right lung measures "), "{}", r.warnings[0]);
        let r = refine(&hu, SHAPE, spacing, &left, &right, &none).expect("refine");
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    /// A ring of right lung around a dense disc in slices 2-4 (the refined lung differs from
    /// the model's there by one isolated voxel, as where the step added lung); below it, in
    /// slices 0-1, a disc of lung (`lung_below`) or dense tissue (the abdomen under a dome).
    fn island(lung_below: bool) -> (Vec<f32>, Refined, [Vec<u8>; 2]) {
        let [slices, rows, cols] = [6, 48, 48];
        let n = slices * rows * cols;
        let (mut hu, mut right) = (vec![40.0f32; n], vec![0u8; n]);
        for k in 0..slices {
            for r in 0..rows {
                for c in 0..cols {
                    let i = (k * rows + r) * cols + c;
                    let d = ((r as f64 - 24.0).powi(2) + (c as f64 - 24.0).powi(2)).sqrt();
                    let lung = d <= 18.0 && (k >= 2 || lung_below) && !((2..5).contains(&k) && d <= 6.0);
                    if lung {
                        hu[i] = -850.0;
                        right[i] = 1;
                    }
                }
            }
        }
        let empty = vec![0u8; n];
        let mut out = Refined::of_model(&empty, &right, &empty);
        for k in 2..5 {
            out.right_lung[(k * rows + 1) * cols + 1] = 1;
        }
        (hu, out, [empty, right])
    }

    #[test]
    fn an_island_resting_on_lung_is_enclosed_one_resting_on_the_abdomen_is_not() {
        let shape = [6, 48, 48];
        let (hu, mut out, model) = island(true);
        let enclosed = enclose(&mut out, &hu, shape, &[&model[0], &model[1]]);
        // the 13-pixel-wide disc in each of slices 2-4
        assert_eq!(enclosed[1].len(), 3 * 113, "a lesion with lung below it");
        assert!(enclosed[1].iter().all(|&i| out.right_lung[i as usize] != 0 && out.opacity[i as usize] != 0));
        let (hu, mut out, model) = island(false);
        let enclosed = enclose(&mut out, &hu, shape, &[&model[0], &model[1]]);
        assert!(enclosed[1].is_empty(), "the dome of an organ: open below");
        assert_eq!(count(&out.opacity), 0);
    }

    #[test]
    fn tiny_and_empty_volumes_give_empty_results() {
        for shape in [[0, 0, 0], [1, 1, 1], [2, 3, 4], [3, 16, 16]] {
            let n: usize = shape.iter().product();
            let (hu, ones) = (vec![40.0f32; n], vec![1u8; n]);
            let r = refine(&hu, shape, [5.0, 1.0, 1.0], &ones, &vec![0; n], &vec![0; n]).expect("refine");
            assert!(r.regions.is_empty() && count(&r.effusion_left) == 0, "{shape:?}");
            assert_eq!(count(&r.left_lung), n, "{shape:?}");
            let d = crate::denoise(&hu, shape, [5.0, 1.0, 1.0]);
            assert!(d.hu.is_none(), "{shape:?}");
        }
    }

    #[test]
    fn mismatched_inputs_are_an_error() {
        let m = [0u8; 7];
        assert_eq!(refine(&[0.0; 8], [2, 2, 2], [1.0; 3], &m, &m, &m).err(), Some(ShapeMismatch));
    }
}
