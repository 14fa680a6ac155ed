//! Quantitative chest CT findings from segmentation masks.
//!
//! Input: the HU volume `[slices, rows, cols]` in canonical orientation (axis 0 inferior ->
//! superior, axis 1 anterior -> posterior, axis 2 patient right -> left), its voxel spacing in mm,
//! and binary masks of the same shape for the left lung, the right lung (each including its
//! opacities) and lung opacities (ground glass and consolidation).
//!
//! Output ([`Findings`]), each value with its unit:
//! - lung volume left/right/total (mL); opacity volume (mL) and percentage of lung involved (%),
//!   per lung and per zone (upper, middle, lower third of each lung's cranio-caudal extent);
//! - mean HU of the opacities;
//! - the zone-based CT severity score 0-30: six zones scored 0-5 by the bands of Francone et al.,
//!   "Chest CT score in COVID-19 patients: correlation with disease severity and short-term
//!   prognosis", Eur Radiol 2020;30:6808-6817 (0 %: 0, < 5 %: 1, 5-25 %: 2, 26-50 %: 3,
//!   51-75 %: 4, > 75 %: 5);
//! - the extent class of the French Society of Radiology (SFR) COVID-19 CT report: none/minimal
//!   (< 10 %), moderate (10-25 %), extensive (25-50 %), severe (50-75 %), critical (> 75 %);
//! - a pattern suggestion in the RSNA consensus categories (Simpson et al., Radiology:
//!   Cardiothoracic Imaging 2020;2(2):e200152): typical, indeterminate, atypical, negative for
//!   pneumonia, from laterality, peripheral (subpleural) and lower-zone predominance
//!   ([`suggest_pattern`] documents each rule and threshold).
//!
//! These are measurements of a quantitative method, not a diagnosis.

mod geometry;
mod pattern;

use serde::Serialize;

pub use geometry::peripheral_shell;
pub use pattern::{suggest_pattern, Pattern, PatternInputs};

/// Opacity percentage below which a lung counts as not involved (%).
pub const INVOLVED_MIN_PCT: f64 = 1.0;
/// Depth from the lung surface within which an opacity is peripheral / subpleural (mm).
pub const PERIPHERAL_DEPTH_MM: f64 = 10.0;

/// Which lung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The patient's left lung.
    Left,
    /// The patient's right lung.
    Right,
}

/// Cranio-caudal third of a lung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Upper third.
    Upper,
    /// Middle third.
    Middle,
    /// Lower third.
    Lower,
}

/// The masks of one segmentation, each `[slices, rows, cols]` row-major, non-zero = inside.
#[derive(Debug, Clone, Copy)]
pub struct Masks<'a> {
    /// Left lung (including its opacities).
    pub left_lung: &'a [u8],
    /// Right lung (including its opacities).
    pub right_lung: &'a [u8],
    /// Lung opacities (ground glass and consolidation).
    pub opacity: &'a [u8],
}

/// The HU volume the masks belong to.
#[derive(Debug, Clone, Copy)]
pub struct Grid<'a> {
    /// HU, `[slices, rows, cols]` row-major.
    pub hu: &'a [f32],
    /// `[slices, rows, cols]`.
    pub shape: [usize; 3],
    /// Voxel spacing `[slice, row, col]` in mm.
    pub spacing_mm: [f64; 3],
}

/// Volumes of one region.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Involvement {
    /// Lung volume (mL).
    pub lung_ml: f64,
    /// Opacity volume (mL).
    pub opacity_ml: f64,
    /// Opacity volume / lung volume (%); 0 when the lung volume is 0.
    pub involvement_pct: f64,
}

impl Involvement {
    fn new(lung_ml: f64, opacity_ml: f64) -> Self {
        let involvement_pct = if lung_ml > 0.0 { 100.0 * opacity_ml / lung_ml } else { 0.0 };
        Involvement { lung_ml, opacity_ml, involvement_pct }
    }
}

/// One lung's findings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LungFindings {
    /// Which lung.
    pub side: Side,
    /// Its volumes.
    #[serde(flatten)]
    pub involvement: Involvement,
    /// Mean HU of its opacity voxels.
    pub opacity_mean_hu: Option<f64>,
    /// First and last slice index of the lung (canonical, inferior -> superior).
    pub slice_extent: Option<(usize, usize)>,
}

/// One of the six zones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneFindings {
    /// Lung.
    pub side: Side,
    /// Third.
    pub level: Level,
    /// Its volumes.
    #[serde(flatten)]
    pub involvement: Involvement,
    /// Francone zone score 0-5.
    pub score: u8,
}

/// The slice of largest opacity area in one lung (for key images and planar ROIs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeySlice {
    /// Lung.
    pub side: Side,
    /// Canonical slice index.
    pub slice: usize,
    /// Opacity area on that slice (mm²).
    pub opacity_area_mm2: f64,
    /// Mean HU of the opacity on that slice.
    pub opacity_mean_hu: f64,
}

/// SFR extent class of lung involvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtentClass {
    /// < 10 %.
    NoneOrMinimal,
    /// 10-25 %.
    Moderate,
    /// 25-50 %.
    Extensive,
    /// 50-75 %.
    Severe,
    /// > 75 %.
    Critical,
}

impl ExtentClass {
    /// The class for a total involvement in %.
    pub fn from_pct(pct: f64) -> Self {
        match pct {
            p if p < 10.0 => ExtentClass::NoneOrMinimal,
            p if p < 25.0 => ExtentClass::Moderate,
            p if p < 50.0 => ExtentClass::Extensive,
            p if p <= 75.0 => ExtentClass::Severe,
            _ => ExtentClass::Critical,
        }
    }

    /// Display name.
    pub fn label(self) -> &'static str {
        match self {
            ExtentClass::NoneOrMinimal => "none or minimal (<10 %)",
            ExtentClass::Moderate => "moderate (10-25 %)",
            ExtentClass::Extensive => "extensive (25-50 %)",
            ExtentClass::Severe => "severe (50-75 %)",
            ExtentClass::Critical => "critical (>75 %)",
        }
    }
}

/// Francone et al. 2020 zone score for an involvement in % (0: none; 1: < 5; 2: 5-25;
/// 3: 26-50; 4: 51-75; 5: > 75). Percentages between the published integer bands (e.g. 25.5)
/// go to the lower band.
pub fn zone_score(pct: f64) -> u8 {
    match pct {
        p if p <= 0.0 => 0,
        p if p < 5.0 => 1,
        p if p <= 25.5 => 2,
        p if p <= 50.5 => 3,
        p if p <= 75.5 => 4,
        _ => 5,
    }
}

/// All findings of one analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Findings {
    /// Left then right lung.
    pub lungs: Vec<LungFindings>,
    /// Both lungs.
    pub total: Involvement,
    /// Six zones: left upper, middle, lower, right upper, middle, lower.
    pub zones: Vec<ZoneFindings>,
    /// Mean HU of all opacity voxels.
    pub opacity_mean_hu: Option<f64>,
    /// Sum of the six zone scores, 0-30.
    pub severity_score: u8,
    /// SFR extent class.
    pub extent_class: ExtentClass,
    /// RSNA category suggested.
    pub pattern: Pattern,
    /// Why that category (the rule that fired, with the numbers).
    pub pattern_rationale: String,
    /// Share of the opacity volume within 10 mm of the lung surface (0-1).
    pub peripheral_fraction: Option<f64>,
    /// Slice of largest opacity area per lung (lungs without opacity have none).
    pub key_slices: Vec<KeySlice>,
}

/// Why findings could not be computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch;

impl std::fmt::Display for ShapeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("masks and volume differ in size")
    }
}

impl std::error::Error for ShapeMismatch {}

/// Computes every finding.
///
/// # Errors
/// [`ShapeMismatch`] when a mask or the HU array does not have `shape` elements.
pub fn compute(grid: &Grid<'_>, masks: &Masks<'_>) -> Result<Findings, ShapeMismatch> {
    let n: usize = grid.shape.iter().product();
    if [grid.hu.len(), masks.left_lung.len(), masks.right_lung.len(), masks.opacity.len()].iter().any(|&l| l != n) {
        return Err(ShapeMismatch);
    }
    let voxel_ml = grid.spacing_mm.iter().product::<f64>() / 1000.0;
    let plane = grid.shape[1] * grid.shape[2];
    let pixel_mm2 = grid.spacing_mm[1] * grid.spacing_mm[2];

    let per_slice = |lung: &[u8]| -> Vec<SliceCounts> {
        (0..grid.shape[0])
            .map(|k| {
                let range = k * plane..(k + 1) * plane;
                let mut c = SliceCounts::default();
                for i in range {
                    if lung[i] != 0 {
                        c.lung += 1;
                        if masks.opacity[i] != 0 {
                            c.opacity += 1;
                            c.opacity_hu += f64::from(grid.hu[i]);
                        }
                    }
                }
                c
            })
            .collect()
    };

    // the two lungs are independent: count them side by side
    let per_lung = |lung: &[u8]| (per_slice(lung), peripheral_counts(grid, lung, masks.opacity));
    let ((left_slices, left_peripheral), (right_slices, right_peripheral)) = std::thread::scope(|scope| {
        let left = scope.spawn(|| per_lung(masks.left_lung));
        let right = per_lung(masks.right_lung);
        // a panic in the counting thread is a bug in this function, not bad input
        (left.join().unwrap_or_else(|p| std::panic::resume_unwind(p)), right)
    });
    let mut lungs = Vec::new();
    let mut zones = Vec::new();
    let mut key_slices = Vec::new();
    let mut total = SliceCounts::default();
    let mut inv = [Involvement::new(0.0, 0.0); 2];
    let counted = [(Side::Left, left_slices), (Side::Right, right_slices)];
    for (i, (side, slices)) in counted.into_iter().enumerate() {
        let sum = slices.iter().fold(SliceCounts::default(), |a, b| a.add(b));
        total = total.add(&sum);
        let extent = slice_extent(&slices);
        let involvement = Involvement::new(sum.lung as f64 * voxel_ml, sum.opacity as f64 * voxel_ml);
        inv[i] = involvement;
        lungs.push(LungFindings { side, involvement, opacity_mean_hu: sum.mean_hu(), slice_extent: extent });
        for (level, range) in thirds(extent) {
            let z = range.map(|r| slices[r].iter().fold(SliceCounts::default(), |a, b| a.add(b))).unwrap_or_default();
            let involvement = Involvement::new(z.lung as f64 * voxel_ml, z.opacity as f64 * voxel_ml);
            zones.push(ZoneFindings { side, level, involvement, score: zone_score(involvement.involvement_pct) });
        }
        if let Some((k, c)) = slices.iter().enumerate().filter(|(_, c)| c.opacity > 0).max_by_key(|(_, c)| c.opacity) {
            key_slices.push(KeySlice {
                side,
                slice: k,
                opacity_area_mm2: c.opacity as f64 * pixel_mm2,
                opacity_mean_hu: c.mean_hu().unwrap_or(0.0),
            });
        }
    }
    let total_inv = Involvement::new(total.lung as f64 * voxel_ml, total.opacity as f64 * voxel_ml);
    let (peripheral, all) = (left_peripheral.0 + right_peripheral.0, left_peripheral.1 + right_peripheral.1);
    let peripheral_fraction = (all > 0).then(|| peripheral as f64 / all as f64);
    let lower_pct = zone_pct(&zones, Level::Lower);
    let upper_pct = zone_pct(&zones, Level::Upper);
    let (pattern, pattern_rationale) = suggest_pattern(&PatternInputs {
        total_pct: total_inv.involvement_pct,
        left_pct: inv[0].involvement_pct,
        right_pct: inv[1].involvement_pct,
        peripheral_fraction,
        lower_zone_pct: lower_pct,
        upper_zone_pct: upper_pct,
        opacity_mean_hu: total.mean_hu(),
    });
    Ok(Findings {
        severity_score: zones.iter().map(|z| z.score).sum(),
        extent_class: ExtentClass::from_pct(total_inv.involvement_pct),
        lungs,
        total: total_inv,
        zones,
        opacity_mean_hu: total.mean_hu(),
        pattern,
        pattern_rationale,
        peripheral_fraction,
        key_slices,
    })
}

/// Involvement (%) of the two zones at `level` together.
fn zone_pct(zones: &[ZoneFindings], level: Level) -> f64 {
    let (lung, op) = zones
        .iter()
        .filter(|z| z.level == level)
        .fold((0.0, 0.0), |(l, o), z| (l + z.involvement.lung_ml, o + z.involvement.opacity_ml));
    if lung > 0.0 {
        100.0 * op / lung
    } else {
        0.0
    }
}

/// Share of opacity voxels within [`PERIPHERAL_DEPTH_MM`] of their lung's surface.
/// (opacity voxels in the lung's peripheral shell, opacity voxels in the lung).
fn peripheral_counts(grid: &Grid<'_>, lung: &[u8], opacity: &[u8]) -> (usize, usize) {
    let mut peripheral = 0usize;
    let mut all = 0usize;
    let shell = peripheral_shell(lung, grid.shape, grid.spacing_mm, PERIPHERAL_DEPTH_MM);
    for i in 0..lung.len() {
        if lung[i] != 0 && opacity[i] != 0 {
            all += 1;
            if shell[i] != 0 {
                peripheral += 1;
            }
        }
    }
    (peripheral, all)
}

#[derive(Debug, Clone, Copy, Default)]
struct SliceCounts {
    lung: usize,
    opacity: usize,
    opacity_hu: f64,
}

impl SliceCounts {
    fn add(&self, o: &SliceCounts) -> SliceCounts {
        SliceCounts {
            lung: self.lung + o.lung,
            opacity: self.opacity + o.opacity,
            opacity_hu: self.opacity_hu + o.opacity_hu,
        }
    }

    fn mean_hu(&self) -> Option<f64> {
        (self.opacity > 0).then(|| self.opacity_hu / self.opacity as f64)
    }
}

fn slice_extent(slices: &[SliceCounts]) -> Option<(usize, usize)> {
    let first = slices.iter().position(|c| c.lung > 0)?;
    let last = slices.iter().rposition(|c| c.lung > 0)?;
    Some((first, last))
}

/// Upper, middle and lower thirds of a slice extent (inferior -> superior indices), as ranges.
/// The extent's slice count is split as evenly as possible; the zones are contiguous and cover it.
fn thirds(extent: Option<(usize, usize)>) -> [(Level, Option<std::ops::Range<usize>>); 3] {
    let Some((first, last)) = extent else {
        return [(Level::Upper, None), (Level::Middle, None), (Level::Lower, None)];
    };
    let n = last - first + 1;
    let a = first + n / 3; // end of lower third
    let b = first + (2 * n) / 3; // end of middle third
    [(Level::Upper, Some(b..last + 1)), (Level::Middle, Some(a..b)), (Level::Lower, Some(first..a))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn francone_bands() {
        assert_eq!(zone_score(0.0), 0);
        assert_eq!(zone_score(0.1), 1);
        assert_eq!(zone_score(4.9), 1);
        assert_eq!(zone_score(5.0), 2);
        assert_eq!(zone_score(25.0), 2);
        assert_eq!(zone_score(26.0), 3);
        assert_eq!(zone_score(50.0), 3);
        assert_eq!(zone_score(51.0), 4);
        assert_eq!(zone_score(75.0), 4);
        assert_eq!(zone_score(76.0), 5);
        assert_eq!(zone_score(100.0), 5);
    }

    #[test]
    fn sfr_classes() {
        assert_eq!(ExtentClass::from_pct(0.0), ExtentClass::NoneOrMinimal);
        assert_eq!(ExtentClass::from_pct(9.9), ExtentClass::NoneOrMinimal);
        assert_eq!(ExtentClass::from_pct(10.0), ExtentClass::Moderate);
        assert_eq!(ExtentClass::from_pct(30.0), ExtentClass::Extensive);
        assert_eq!(ExtentClass::from_pct(60.0), ExtentClass::Severe);
        assert_eq!(ExtentClass::from_pct(80.0), ExtentClass::Critical);
    }

    #[test]
    fn thirds_cover_the_extent() {
        let t = thirds(Some((10, 39)));
        assert_eq!(t[2].1, Some(10..20));
        assert_eq!(t[1].1, Some(20..30));
        assert_eq!(t[0].1, Some(30..40));
        let t = thirds(Some((0, 1)));
        let covered: usize = t.iter().filter_map(|(_, r)| r.clone()).map(|r| r.len()).sum();
        assert_eq!(covered, 2);
    }

    /// Two box lungs of 10x10x30 voxels at 1 mm; opacity filling the lower third of the right lung.
    #[test]
    fn volumes_zones_and_scores_of_a_box_phantom() {
        let shape = [30, 20, 40];
        let n = shape.iter().product();
        let (mut left, mut right, mut op) = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
        let hu = vec![-500.0f32; n];
        for k in 0..30 {
            for r in 5..15 {
                for c in 0..10 {
                    right[(k * 20 + r) * 40 + c] = 1; // columns right -> left: right lung at low columns
                    left[(k * 20 + r) * 40 + c + 25] = 1;
                    if k < 10 {
                        op[(k * 20 + r) * 40 + c] = 1;
                    }
                }
            }
        }
        let grid = Grid { hu: &hu, shape, spacing_mm: [1.0, 1.0, 1.0] };
        let f = compute(&grid, &Masks { left_lung: &left, right_lung: &right, opacity: &op }).unwrap();
        assert_eq!(f.lungs[0].involvement.lung_ml, 3.0);
        assert_eq!(f.lungs[1].involvement.opacity_ml, 1.0);
        assert!((f.lungs[1].involvement.involvement_pct - 100.0 / 3.0).abs() < 1e-9);
        assert!((f.total.involvement_pct - 100.0 / 6.0).abs() < 1e-9);
        let rl = f.zones.iter().find(|z| z.side == Side::Right && z.level == Level::Lower).unwrap();
        assert_eq!(rl.involvement.involvement_pct, 100.0);
        assert_eq!(rl.score, 5);
        assert_eq!(f.severity_score, 5);
        assert_eq!(f.extent_class, ExtentClass::Moderate);
        assert_eq!(f.opacity_mean_hu, Some(-500.0));
        assert_eq!(f.key_slices.len(), 1);
        assert_eq!(f.key_slices[0].side, Side::Right);
        assert_eq!(f.key_slices[0].opacity_area_mm2, 100.0);
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let grid = Grid { hu: &[0.0; 8], shape: [2, 2, 2], spacing_mm: [1.0; 3] };
        let m = [0u8; 7];
        assert_eq!(compute(&grid, &Masks { left_lung: &m, right_lung: &m, opacity: &m }), Err(ShapeMismatch));
    }
}
