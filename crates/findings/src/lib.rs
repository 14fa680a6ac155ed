//! Quantitative chest CT findings from segmentation masks.
//!
//! Input: the HU volume `[slices, rows, cols]` in canonical orientation (axis 0 inferior ->
//! superior, axis 1 anterior -> posterior, axis 2 patient right -> left), its voxel spacing in mm,
//! and binary masks of the same shape for the left lung, the right lung (each including its
//! opacities) and lung opacities (ground glass and consolidation).
//!
//! Output ([`Findings`]), each value with its unit:
//! - lung volume left/right/total (mL); opacity volume (mL) and percentage of lung involved (%),
//!   per lung and per zone (upper, middle, lower third of each lung's volume, cranio-caudally);
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
//! - with the masks of the pleural-cavity stage ([`Masks::effusion_left`], ...): pleural
//!   effusion per side (volume, mean HU, cranio-caudal extent) and the indeterminate dense
//!   dependent region per side ([`IndeterminateDense`]);
//! - dense focal lesions ([`FocalLesion`]): compact connected components of consolidation-density
//!   opacity at least [`FOCAL_MIN_DIAMETER_MM`] across, outside a diffuse process.
//!
//! Names, codes, units and display texts of the findings: [`vocabulary`].
//!
//! These are measurements of a quantitative method, not a diagnosis.

mod dense;
mod geometry;
pub mod measures;
mod pattern;
pub mod vocabulary;

use serde::{Deserialize, Serialize};

pub use geometry::peripheral_shell;
pub use pattern::{suggest_pattern, Pattern, PatternInputs};

/// The method's noise floor (%): opacity involving less of the lungs (in total, or of one lung for
/// laterality) is within its false-positive level. Below it (and without focal lesion, effusion
/// or dense dependent region) the suggestion is "negative for pneumonia". The model package's
/// README and `manifest.toml` (`noise_floor_percent`) state the same value.
pub const NOISE_FLOOR_PCT: f64 = 1.0;
/// The largest relative error of an opacity volume the method is validated to: 15 %, the target
/// of the severe-disease validation, which every phantom and written-in case meets (measured -11
/// to +10 %, `models/covid19-lung-ct/README.md`). With [`NOISE_FLOOR_PCT`] it gives the
/// [`Uncertainty`] of every result.
pub const OPACITY_RELATIVE_ERROR: f64 = 0.15;
/// Consolidation density: opacity voxels above this HU form dense focal lesions (the manifest's
/// consolidation band, -300 < HU <= +100).
pub const FOCAL_MIN_HU: f32 = -300.0;
/// Smallest equivalent-sphere diameter of a dense focal lesion (mm).
pub const FOCAL_MIN_DIAMETER_MM: f64 = 10.0;
/// Compactness: a focal lesion's bounding box extent along each axis is at most this multiple of
/// its equivalent-sphere diameter (a sphere: 1; a 5 x 20 x 60 mm band: 2.7).
pub const FOCAL_MAX_EXTENT_RATIO: f64 = 2.5;
/// A dense component holding more than this share of all dense opacity voxels ...
pub const DIFFUSE_MIN_SHARE_OF_DENSE: f64 = 0.5;
/// ... and more than this share of its lung's volume is diffuse consolidation, not focal.
pub const DIFFUSE_MIN_SHARE_OF_LUNG: f64 = 0.25;
/// Most focal lesions named in the pattern rationale (largest first).
pub const MAX_FOCAL_IN_RATIONALE: usize = 3;
/// Depth from the lung surface within which an opacity is peripheral / subpleural (mm).
pub const PERIPHERAL_DEPTH_MM: f64 = 10.0;

/// Which lung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The patient's left lung.
    Left,
    /// The patient's right lung.
    Right,
}

impl Side {
    /// Display name (and JSON name): "left", "right".
    pub fn name(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
}

/// Cranio-caudal third of a lung's volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Upper third.
    Upper,
    /// Middle third.
    Middle,
    /// Lower third.
    Lower,
}

impl Level {
    /// Display name (and JSON name): "upper", "middle", "lower".
    pub fn name(self) -> &'static str {
        match self {
            Level::Upper => "upper",
            Level::Middle => "middle",
            Level::Lower => "lower",
        }
    }
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
    /// Left pleural effusion (not lung, not opacity); `None`: not assessed.
    pub effusion_left: Option<&'a [u8]>,
    /// Right pleural effusion (not lung, not opacity); `None`: not assessed.
    pub effusion_right: Option<&'a [u8]>,
    /// Dense dependent region that is effusion or consolidation: a subset of the lung and
    /// opacity masks (counted as opacity); `None`: not assessed.
    pub indeterminate: Option<&'a [u8]>,
}

impl<'a> Masks<'a> {
    /// Lungs and opacity only (the pleural cavity not assessed).
    pub fn lungs(left_lung: &'a [u8], right_lung: &'a [u8], opacity: &'a [u8]) -> Self {
        Masks { left_lung, right_lung, opacity, effusion_left: None, effusion_right: None, indeterminate: None }
    }
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
    /// Third (of the lung's volume, from the base up).
    pub level: Level,
    /// Its volumes.
    #[serde(flatten)]
    pub involvement: Involvement,
    /// Francone zone score 0-5.
    pub score: u8,
    /// Its canonical slices (inferior -> superior indices, `start..end`); `None` for a lung with
    /// no voxel.
    pub slices: Option<std::ops::Range<usize>>,
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

/// SFR extent class of lung involvement, ordered from none to critical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    /// Every class, from none to critical.
    pub const ALL: [ExtentClass; 5] = [
        ExtentClass::NoneOrMinimal,
        ExtentClass::Moderate,
        ExtentClass::Extensive,
        ExtentClass::Severe,
        ExtentClass::Critical,
    ];

    /// JSON name: "none_or_minimal", "moderate", "extensive", "severe", "critical".
    pub fn name(self) -> &'static str {
        match self {
            ExtentClass::NoneOrMinimal => "none_or_minimal",
            ExtentClass::Moderate => "moderate",
            ExtentClass::Extensive => "extensive",
            ExtentClass::Severe => "severe",
            ExtentClass::Critical => "critical",
        }
    }

    /// The class of a JSON name ([`ExtentClass::name`]), `None` for any other text.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

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
/// 3: 26-50; 4: 51-75; 5: > 75). The bands are integer percentages: a measurement between two
/// of them (e.g. 25.5) goes to the lower one, "< 5" is read as written (4.9 is 1), and under
/// 0.5 % (0 when rounded) a zone is "none": a few mL of opacity in a zone of several hundred,
/// within the method's false-positive floor [`NOISE_FLOOR_PCT`] (a dense lesion that small is
/// said as a focal lesion; faint ground glass that small is not scored).
pub fn zone_score(pct: f64) -> u8 {
    match pct {
        p if p < 0.5 => 0,
        p if p < 5.0 => 1,
        p if p <= 25.5 => 2,
        p if p <= 50.5 => 3,
        p if p <= 75.5 => 4,
        _ => 5,
    }
}

/// The involvement (%) a measured involvement `pct` allows the truth to have, given the method's
/// validated error: `[(pct - NOISE_FLOOR_PCT) / (1 + e), pct / (1 - e)]` with
/// e = [`OPACITY_RELATIVE_ERROR`] (the opacity found is within e of the truth, plus up to the
/// noise floor of false-positive opacity), clamped to 0-100 %.
pub fn involvement_interval(pct: f64) -> [f64; 2] {
    let e = OPACITY_RELATIVE_ERROR;
    [((pct - NOISE_FLOOR_PCT) / (1.0 + e)).clamp(0.0, 100.0), (pct / (1.0 - e)).clamp(0.0, 100.0)]
}

/// What the truth may be, given the method's validated error ([`involvement_interval`] of the
/// total and of each zone). A class or score whose range holds more than one value is said to be
/// uncertain in the SR, the text and the messages ("possibly moderate"), never rounded to one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Uncertainty {
    /// Total involvement (%): lowest and highest the measurement allows.
    pub involvement_pct: [f64; 2],
    /// The extent classes of those two ends; equal when the class is certain.
    pub extent_class: [ExtentClass; 2],
    /// Lowest and highest CT severity score: the sums of the zone scores at the ends of each
    /// zone's interval.
    pub severity_score: [u8; 2],
}

impl Uncertainty {
    /// From the measured total involvement (%) and the six zones' involvements (%).
    pub fn new(total_pct: f64, zone_pcts: impl IntoIterator<Item = f64>) -> Self {
        let total = involvement_interval(total_pct);
        let mut severity_score = [0u8; 2];
        for pct in zone_pcts {
            let [lo, hi] = involvement_interval(pct);
            severity_score[0] += zone_score(lo);
            severity_score[1] += zone_score(hi);
        }
        Uncertainty { involvement_pct: total, extent_class: total.map(ExtentClass::from_pct), severity_score }
    }

    /// The classes within the error other than `class` (the measured one), lowest first.
    pub fn other_classes(&self, class: ExtentClass) -> Vec<ExtentClass> {
        ExtentClass::ALL
            .into_iter()
            .filter(|c| *c >= self.extent_class[0] && *c <= self.extent_class[1] && *c != class)
            .collect()
    }

    /// The highest class within the error (the one triage ranks by: the sickest first).
    pub fn highest_class(&self) -> ExtentClass {
        self.extent_class[1]
    }
}

/// Pleural effusion of one side ([`vocabulary::PLEURAL_EFFUSION`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effusion {
    /// Which side.
    pub side: Side,
    /// Volume (mL); 0 when the side has none.
    pub volume_ml: f64,
    /// Mean HU of its voxels.
    pub mean_hu: Option<f64>,
    /// Cranio-caudal extent (mm): (last - first + 1) slices with effusion x slice spacing; 0 when none.
    pub craniocaudal_extent_mm: f64,
    /// First and last canonical slice with effusion.
    pub slice_extent: Option<(usize, usize)>,
    /// Display text ([`vocabulary::effusion_text`]).
    #[serde(default)]
    pub text: String,
}

/// The indeterminate dense dependent region of one side ([`vocabulary::INDETERMINATE_DENSE`]):
/// effusion or consolidation, counted as opacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndeterminateDense {
    /// The lung whose mask holds it.
    pub side: Side,
    /// Volume (mL), > 0.
    pub volume_ml: f64,
    /// Display text, without the side ([`vocabulary::indeterminate_text`]: "dense dependent
    /// region: effusion or consolidation, N mL (counted as opacity)").
    #[serde(default)]
    pub text: String,
}

/// A dense focal lesion ([`vocabulary::FOCAL_OPACITY`]): a 26-connected component of opacity
/// voxels denser than [`FOCAL_MIN_HU`] (outside the indeterminate dense dependent region) whose
/// equivalent-sphere diameter is at least [`FOCAL_MIN_DIAMETER_MM`], that is compact (its
/// bounding box extent along each axis at most [`FOCAL_MAX_EXTENT_RATIO`] x that diameter), and
/// that is not a diffuse process (holding more than [`DIFFUSE_MIN_SHARE_OF_DENSE`] of all dense
/// opacity and more than [`DIFFUSE_MIN_SHARE_OF_LUNG`] of its lung's volume).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FocalLesion {
    /// The lung holding most of its voxels.
    pub side: Side,
    /// The zone (third of that lung's volume) of its centroid slice.
    pub level: Level,
    /// Volume (mL).
    pub volume_ml: f64,
    /// Equivalent-sphere diameter (mm).
    pub equivalent_diameter_mm: f64,
    /// Largest in-plane diameter (mm), over its slices.
    pub max_inplane_diameter_mm: f64,
    /// Mean HU.
    pub mean_hu: f64,
    /// Canonical slice of its centroid.
    pub centroid_slice: usize,
    /// Display text ([`vocabulary::focal_text`]; "; not typical of pneumonia" when the focal
    /// lesions are the lungs' only opacity above the noise floor).
    #[serde(default)]
    pub text: String,
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
    /// The range of involvement, class and score the method's error allows.
    pub uncertainty: Uncertainty,
    /// RSNA category suggested.
    pub pattern: Pattern,
    /// Why that category (the rule that fired, with the numbers).
    pub pattern_rationale: String,
    /// Share of the opacity volume within 10 mm of the lung surface (0-1).
    pub peripheral_fraction: Option<f64>,
    /// Slice of largest opacity area per lung (lungs without opacity have none).
    pub key_slices: Vec<KeySlice>,
    /// Pleural effusion, left then right; both sides listed when the pleural cavity was assessed
    /// (effusion masks given), none when it was not.
    pub effusions: Vec<Effusion>,
    /// The indeterminate dense dependent region per side, sides with some only.
    pub indeterminate_dense: Vec<IndeterminateDense>,
    /// Dense focal lesions, largest first.
    pub focal_lesions: Vec<FocalLesion>,
    /// Opacity outside the focal lesions / lung volume (%).
    pub non_focal_involvement_pct: f64,
    /// What the reader must know about this result, from the steps that produced the masks
    /// (e.g. one lung much smaller than the other); set by the caller, empty from [`compute`].
    pub cautions: Vec<String>,
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
    let optional = [masks.effusion_left, masks.effusion_right, masks.indeterminate];
    if [grid.hu.len(), masks.left_lung.len(), masks.right_lung.len(), masks.opacity.len()]
        .into_iter()
        .chain(optional.iter().flatten().map(|m| m.len()))
        .any(|l| l != n)
    {
        return Err(ShapeMismatch);
    }
    let voxel_mm3 = grid.spacing_mm.iter().product::<f64>();
    let voxel_ml = voxel_mm3 / 1000.0;
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

    // smallest component that can reach the focal diameter: its runs are kept for the diameters
    let focal_min_mm3 = std::f64::consts::PI / 6.0 * FOCAL_MIN_DIAMETER_MM.powi(3);
    let focal_min_voxels = if voxel_mm3 > 0.0 { ((focal_min_mm3 / voxel_mm3).floor() as usize).max(1) } else { 1 };
    let dense = |i: usize| grid.hu[i] > FOCAL_MIN_HU && masks.indeterminate.is_none_or(|m| m[i] == 0);
    let pleural = || {
        let effusion = |m: Option<&[u8]>| m.map(|m| dense::mask_sums(grid, m, |_| true));
        let indeterminate = |lung: &[u8]| masks.indeterminate.map(|m| dense::mask_sums(grid, m, |i| lung[i] != 0));
        (
            [effusion(masks.effusion_left), effusion(masks.effusion_right)],
            [indeterminate(masks.left_lung), indeterminate(masks.right_lung)],
        )
    };

    // the two lungs, the dense components and the pleural masks are independent: side by side
    let per_lung = |lung: &[u8]| (per_slice(lung), peripheral_counts(grid, lung, masks.opacity));
    let ((left_slices, left_peripheral), (right_slices, right_peripheral), components, (effusion_sums, indet_sums)) =
        std::thread::scope(|scope| {
            let left = scope.spawn(|| per_lung(masks.left_lung));
            let components = scope.spawn(|| {
                dense::label(grid, masks.opacity, masks.left_lung, masks.right_lung, dense, focal_min_voxels)
            });
            let pleural = scope.spawn(pleural);
            let right = per_lung(masks.right_lung);
            // a panic in a counting thread is a bug in this function, not bad input
            (
                left.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                right,
                components.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                pleural.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            )
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
        for (level, range) in thirds(&slices) {
            let z = range
                .clone()
                .map(|r| slices[r].iter().fold(SliceCounts::default(), |a, b| a.add(b)))
                .unwrap_or_default();
            let involvement = Involvement::new(z.lung as f64 * voxel_ml, z.opacity as f64 * voxel_ml);
            let score = zone_score(involvement.involvement_pct);
            zones.push(ZoneFindings { side, level, involvement, score, slices: range });
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

    let sides = [Side::Left, Side::Right];
    let effusions: Vec<Effusion> = sides
        .iter()
        .zip(effusion_sums)
        .filter_map(|(&side, s)| {
            let s = s?;
            let volume_ml = s.voxels as f64 * voxel_ml;
            let mean_hu = (s.voxels > 0).then(|| s.hu_sum / s.voxels as f64);
            let slice_extent = s.first.zip(s.last);
            let craniocaudal_extent_mm = slice_extent.map_or(0.0, |(a, b)| (b - a + 1) as f64 * grid.spacing_mm[0]);
            let text = vocabulary::effusion_text(side, volume_ml, mean_hu, craniocaudal_extent_mm);
            Some(Effusion { side, volume_ml, mean_hu, craniocaudal_extent_mm, slice_extent, text })
        })
        .collect();
    let indeterminate_dense: Vec<IndeterminateDense> = sides
        .iter()
        .zip(indet_sums)
        .filter_map(|(&side, s)| {
            let volume_ml = s?.voxels as f64 * voxel_ml;
            (volume_ml > 0.0).then(|| IndeterminateDense {
                side,
                volume_ml,
                text: vocabulary::indeterminate_text(volume_ml),
            })
        })
        .collect();

    let mut focal_lesions = focal_lesions(grid, &components, focal_min_voxels, &lungs, &zones);
    let focal_ml: f64 = focal_lesions.iter().map(|l| l.volume_ml).sum();
    let non_focal_involvement_pct = if total_inv.lung_ml > 0.0 {
        (100.0 * (total_inv.opacity_ml - focal_ml) / total_inv.lung_ml).max(0.0)
    } else {
        0.0
    };
    let inputs = PatternInputs {
        total_pct: total_inv.involvement_pct,
        left_pct: inv[0].involvement_pct,
        right_pct: inv[1].involvement_pct,
        peripheral_fraction,
        lower_zone_pct: lower_pct,
        upper_zone_pct: upper_pct,
        opacity_mean_hu: total.mean_hu(),
        focal_lesions: &focal_lesions,
        non_focal_pct: non_focal_involvement_pct,
        effusions: &effusions,
        indeterminate_dense: &indeterminate_dense,
    };
    let (pattern, pattern_rationale) = suggest_pattern(&inputs);
    let isolated = pattern::focal_lesions_isolated(&inputs);
    for l in &mut focal_lesions {
        l.text = vocabulary::focal_text(l.side, l.level, l.volume_ml, isolated);
    }
    Ok(Findings {
        severity_score: zones.iter().map(|z| z.score).sum(),
        extent_class: ExtentClass::from_pct(total_inv.involvement_pct),
        uncertainty: Uncertainty::new(total_inv.involvement_pct, zones.iter().map(|z| z.involvement.involvement_pct)),
        lungs,
        total: total_inv,
        zones,
        opacity_mean_hu: total.mean_hu(),
        pattern,
        pattern_rationale,
        peripheral_fraction,
        key_slices,
        effusions,
        indeterminate_dense,
        focal_lesions,
        non_focal_involvement_pct,
        cautions: Vec::new(),
    })
}

/// The dense components that are focal lesions ([`FocalLesion`]), largest first; their `text`
/// is left empty (it depends on the pattern rule).
fn focal_lesions(
    grid: &Grid<'_>,
    components: &dense::Components,
    min_voxels: usize,
    lungs: &[LungFindings],
    zones: &[ZoneFindings],
) -> Vec<FocalLesion> {
    let voxel_mm3 = grid.spacing_mm.iter().product::<f64>();
    let mut out = Vec::new();
    for c in components.components.iter().filter(|c| c.voxels >= min_voxels) {
        let volume_mm3 = c.voxels as f64 * voxel_mm3;
        let equivalent_diameter_mm = (6.0 * volume_mm3 / std::f64::consts::PI).cbrt();
        if equivalent_diameter_mm < FOCAL_MIN_DIAMETER_MM {
            continue;
        }
        let compact = (0..3).all(|a| {
            (c.max[a] - c.min[a] + 1) as f64 * grid.spacing_mm[a] <= FOCAL_MAX_EXTENT_RATIO * equivalent_diameter_mm
        });
        if !compact {
            continue;
        }
        let side = dense::side_of(c, grid.shape[2]);
        let lung = lungs.iter().find(|l| l.side == side);
        let lung_ml = lung.map_or(0.0, |l| l.involvement.lung_ml);
        let volume_ml = volume_mm3 / 1000.0;
        let diffuse = c.voxels as f64 > DIFFUSE_MIN_SHARE_OF_DENSE * components.dense_voxels as f64
            && volume_ml > DIFFUSE_MIN_SHARE_OF_LUNG * lung_ml;
        if diffuse {
            continue;
        }
        let centroid_slice = (c.k_sum / c.voxels as f64).round() as usize;
        out.push(FocalLesion {
            side,
            level: dense::level_of(zones, side, centroid_slice),
            volume_ml,
            equivalent_diameter_mm,
            max_inplane_diameter_mm: dense::max_inplane_diameter_mm(&c.runs, grid.spacing_mm),
            mean_hu: c.hu_sum / c.voxels as f64,
            centroid_slice,
            text: String::new(),
        });
    }
    out.sort_by(|a, b| {
        b.volume_ml
            .total_cmp(&a.volume_ml)
            .then(a.centroid_slice.cmp(&b.centroid_slice))
            .then(a.side.name().cmp(b.side.name()))
    });
    out
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
    let [slices, rows, cols] = grid.shape;
    let plane = rows * cols;
    let (mut peripheral, mut all) = (0usize, 0usize);
    // slice by slice: the shell of each (never the whole volume's) and the opacity in it
    for k in 0..slices.min(lung.len() / plane.max(1)) {
        let (lung, opacity) = (&lung[k * plane..(k + 1) * plane], &opacity[k * plane..(k + 1) * plane]);
        all += lung.iter().zip(opacity).filter(|(&l, &o)| l != 0 && o != 0).count();
        geometry::slice_shell(lung, [rows, cols], grid.spacing_mm, PERIPHERAL_DEPTH_MM, |p| {
            peripheral += usize::from(opacity[p] != 0);
        });
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

/// Upper, middle and lower zones of a lung: the thirds of its volume from the base up
/// (inferior -> superior slice indices, as ranges; contiguous, covering the lung's slices). Each
/// cut lies at the slice boundary nearest to a third of the volume. Thirds of the volume rather
/// than of the height: the first and last slices of a lung hold little of it but most of the
/// segmentation's doubt (the recess behind the diaphragm dome, the apex, gas under the dome), and
/// a height split moves with them.
fn thirds(slices: &[SliceCounts]) -> [(Level, Option<std::ops::Range<usize>>); 3] {
    thirds_of_counts(&slices.iter().map(|c| c.lung as u64).collect::<Vec<_>>())
}

/// [`thirds`] from the voxel count of a region in each slice (inferior first).
pub(crate) fn thirds_of_counts(counts: &[u64]) -> [(Level, Option<std::ops::Range<usize>>); 3] {
    let (Some(first), Some(last)) = (counts.iter().position(|&c| c > 0), counts.iter().rposition(|&c| c > 0)) else {
        return [(Level::Upper, None), (Level::Middle, None), (Level::Lower, None)];
    };
    let total: u64 = counts.iter().sum();
    // the slice boundary (index of the first slice above the cut) nearest to `share` of the volume
    let cut = |share: f64, from: usize| -> usize {
        let target = share * total as f64;
        let mut below = counts[..from].iter().sum::<u64>() as f64;
        let mut best = (from, (below - target).abs());
        for (k, &c) in counts.iter().enumerate().take(last + 1).skip(from) {
            below += c as f64;
            let d = (below - target).abs();
            if d < best.1 {
                best = (k + 1, d);
            }
        }
        best.0
    };
    let a = cut(1.0 / 3.0, first).clamp(first, last + 1);
    let b = cut(2.0 / 3.0, a).clamp(a, last + 1);
    [(Level::Upper, Some(b..last + 1)), (Level::Middle, Some(a..b)), (Level::Lower, Some(first..a))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_class_names_are_their_json_names() {
        for c in ExtentClass::ALL {
            assert_eq!(serde_json::to_value(c).expect("serializes"), serde_json::Value::from(c.name()));
            assert_eq!(ExtentClass::from_name(c.name()), Some(c));
        }
        assert_eq!(ExtentClass::from_name("bogus"), None);
    }

    #[test]
    fn francone_bands() {
        assert_eq!(zone_score(0.0), 0);
        assert_eq!(zone_score(0.4), 0);
        assert_eq!(zone_score(0.5), 1);
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
    fn uncertainty_spans_the_classes_and_scores_the_validated_error_allows() {
        // 9.5 % measured: the truth lies in [(9.5 - 1) / 1.15, 9.5 / 0.85] = [7.39, 11.18] %
        let u = Uncertainty::new(9.5, [0.9, 0.0, 30.0, 4.5, 24.0, 80.0]);
        assert!((u.involvement_pct[0] - 7.391).abs() < 1e-3 && (u.involvement_pct[1] - 11.176).abs() < 1e-3, "{u:?}");
        assert_eq!(u.extent_class, [ExtentClass::NoneOrMinimal, ExtentClass::Moderate]);
        assert_eq!(u.other_classes(ExtentClass::NoneOrMinimal), vec![ExtentClass::Moderate]);
        assert_eq!(u.highest_class(), ExtentClass::Moderate);
        // zones: 0.9 % is within the false-positive floor (0-1), 0 stays 0, 30 % (3) may be 25.2-35.3 %
        // (2-3), 4.5 % (1) may be 5.3 % (1-2), 24 % (2) may be 28 % (2-3), 80 % (5) may be 68.7 % (4-5)
        let (lo, hi): (u8, u8) = ([0, 0, 2, 1, 2, 4].iter().sum(), [1, 0, 3, 2, 3, 5].iter().sum());
        assert_eq!(u.severity_score, [lo, hi]);
        // far from a bound the class is certain; nothing measured is nothing
        let certain = Uncertainty::new(40.0, [40.0; 6]);
        assert_eq!(certain.extent_class, [ExtentClass::Extensive; 2]);
        assert!(certain.other_classes(ExtentClass::Extensive).is_empty());
        let none = Uncertainty::new(0.0, [0.0; 6]);
        assert_eq!((none.involvement_pct, none.severity_score), ([0.0, 0.0], [0, 0]));
        // the interval stays within 0-100 %
        assert_eq!(Uncertainty::new(95.0, [95.0; 6]).involvement_pct[1], 100.0);
    }

    #[test]
    fn thirds_of_the_volume_cover_the_extent() {
        let counts =
            |lung: &[usize]| lung.iter().map(|&l| SliceCounts { lung: l, ..Default::default() }).collect::<Vec<_>>();
        // slices 10-39 of equal area: thirds of the height
        let t = thirds(&counts(&[vec![0; 10], vec![100; 30], vec![0; 5]].concat()));
        assert_eq!(t[2].1, Some(10..20));
        assert_eq!(t[1].1, Some(20..30));
        assert_eq!(t[0].1, Some(30..40));
        // a lung widening towards its base, with a stray slice of 5 voxels below it (gas under
        // the dome): the cuts follow the volume (900 = 300 + 300 + 300), not the stray slice
        let t = thirds(&counts(&[5, 0, 0, 150, 150, 100, 100, 100, 50, 50, 50, 50, 50, 50]));
        assert_eq!(t[2].1, Some(0..5));
        assert_eq!(t[1].1, Some(5..8));
        assert_eq!(t[0].1, Some(8..14));
        let t = thirds(&counts(&[1, 1]));
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
        let f = compute(&grid, &Masks::lungs(&left, &right, &op)).unwrap();
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
        assert_eq!(compute(&grid, &Masks::lungs(&m, &m, &m)), Err(ShapeMismatch));
        let ok = [0u8; 8];
        let masks = Masks { effusion_right: Some(&m), ..Masks::lungs(&ok, &ok, &ok) };
        assert_eq!(compute(&grid, &masks), Err(ShapeMismatch));
    }

    /// A chest of two box lungs at 1 mm: `[60, 80, 120]`, right lung columns 10..50, left lung
    /// 70..110, rows 10..70, slices 5..55 (120 mL each; thirds of the volume: lower 5..22, middle
    /// 22..38, upper 38..55), -850 HU; no opacity.
    struct Chest {
        shape: [usize; 3],
        hu: Vec<f32>,
        left: Vec<u8>,
        right: Vec<u8>,
        opacity: Vec<u8>,
    }

    impl Chest {
        fn new() -> Chest {
            let shape = [60, 80, 120];
            let n = shape.iter().product();
            let mut c = Chest { shape, hu: vec![40.0; n], left: vec![0; n], right: vec![0; n], opacity: vec![0; n] };
            for k in 5..55 {
                for r in 10..70 {
                    for col in 10..50 {
                        let i = c.at(k, r, col);
                        c.right[i] = 1;
                        c.hu[i] = -850.0;
                        let j = c.at(k, r, col + 60);
                        c.left[j] = 1;
                        c.hu[j] = -850.0;
                    }
                }
            }
            c
        }

        fn at(&self, k: usize, r: usize, c: usize) -> usize {
            (k * self.shape[1] + r) * self.shape[2] + c
        }

        /// Dense opacity (+20 HU) in a sphere of `diameter` mm centred on a voxel centre.
        fn sphere(&mut self, centre: [usize; 3], diameter: f64) -> usize {
            let rad = diameter / 2.0;
            let mut n = 0;
            for k in 0..self.shape[0] {
                for r in 0..self.shape[1] {
                    for c in 0..self.shape[2] {
                        let d = [k as f64 - centre[0] as f64, r as f64 - centre[1] as f64, c as f64 - centre[2] as f64];
                        if d.iter().map(|x| x * x).sum::<f64>() <= rad * rad {
                            let i = self.at(k, r, c);
                            self.hu[i] = 20.0;
                            self.opacity[i] = 1;
                            n += 1;
                        }
                    }
                }
            }
            n
        }

        /// Dense opacity (+20 HU) in a box `[k0..k1, r0..r1, c0..c1]`.
        fn dense_box(&mut self, b: [std::ops::Range<usize>; 3]) -> usize {
            let mut n = 0;
            for k in b[0].clone() {
                for r in b[1].clone() {
                    for c in b[2].clone() {
                        let i = self.at(k, r, c);
                        self.hu[i] = 20.0;
                        self.opacity[i] = 1;
                        n += 1;
                    }
                }
            }
            n
        }

        fn findings(&self) -> Findings {
            let grid = Grid { hu: &self.hu, shape: self.shape, spacing_mm: [1.0; 3] };
            compute(&grid, &Masks::lungs(&self.left, &self.right, &self.opacity)).unwrap()
        }
    }

    #[test]
    fn a_class_the_error_allows_is_said_in_the_text_and_the_messages() {
        let mut f = Chest::new().findings();
        f.total.involvement_pct = 9.5;
        f.extent_class = ExtentClass::from_pct(9.5);
        f.severity_score = 11;
        f.uncertainty = Uncertainty::new(9.5, [0.9, 0.0, 30.0, 4.5, 24.0, 80.0]);
        assert!(
            vocabulary::summary_text(&f).starts_with(
                "Lung involvement 9.5 %, extent class none or minimal (<10 %), possibly moderate (10-25 %), \
                 CT severity score 11/30 (9-14 within the method's error)"
            ),
            "{}",
            vocabulary::summary_text(&f)
        );
        assert_eq!(
            vocabulary::uncertainty_text(&f),
            "within the method's error (opacity within 15 %, up to 1 % false-positive opacity): lung involvement \
             7.4-11.2 %, extent class none or minimal (<10 %) to moderate (10-25 %), CT severity score 9-14"
        );
        let lines = vocabulary::reported(&f);
        let possible: Vec<_> = lines.iter().filter(|l| l.term == vocabulary::POSSIBLE_EXTENT_CLASS).collect();
        assert_eq!(possible.len(), 1);
        assert_eq!(possible[0].value, vocabulary::ReportedValue::Coded(vocabulary::extent_code(ExtentClass::Moderate)));
        assert_eq!(possible[0].abnormal, Some(true));
        // certain: no "possibly", the score alone
        f.uncertainty = Uncertainty::new(0.0, [0.0; 6]);
        f.severity_score = 0;
        assert!(!vocabulary::summary_text(&f).contains("possibly"));
        assert!(vocabulary::summary_text(&f).contains("CT severity score 0/30"), "{}", vocabulary::summary_text(&f));
        assert!(!vocabulary::reported(&f).iter().any(|l| l.term == vocabulary::POSSIBLE_EXTENT_CLASS));
    }

    #[test]
    fn a_12_mm_dense_sphere_is_one_focal_lesion_in_its_zone() {
        let mut chest = Chest::new();
        let voxels = chest.sphere([45, 40, 30], 12.0); // right lung, upper third
        let f = chest.findings();
        assert_eq!(f.focal_lesions.len(), 1, "{:?}", f.focal_lesions);
        let l = &f.focal_lesions[0];
        assert_eq!((l.side, l.level), (Side::Right, Level::Upper));
        assert_eq!(l.volume_ml, voxels as f64 / 1000.0);
        assert!((l.equivalent_diameter_mm - 12.0).abs() < 0.3, "{}", l.equivalent_diameter_mm);
        assert!((12.0..=14.0).contains(&l.max_inplane_diameter_mm), "{}", l.max_inplane_diameter_mm);
        assert_eq!(l.mean_hu, 20.0);
        assert_eq!(l.centroid_slice, 45);
        assert_eq!(l.text, "focal opacity, 0.9 mL, right upper zone; not typical of pneumonia");
        // 0.9 mL of 240 mL: below the noise floor, but not negative
        assert!(f.total.involvement_pct < NOISE_FLOOR_PCT);
        assert_eq!(f.pattern, Pattern::Atypical);
        assert!(f.pattern_rationale.starts_with(&l.text), "{}", f.pattern_rationale);
        assert_eq!(f.non_focal_involvement_pct, 0.0);
        // the same sphere low in the left lung
        let mut chest = Chest::new();
        chest.sphere([12, 30, 95], 12.0);
        let l = &chest.findings().focal_lesions[0];
        assert_eq!((l.side, l.level), (Side::Left, Level::Lower));
    }

    #[test]
    fn a_6_mm_dense_sphere_is_no_focal_lesion() {
        let mut chest = Chest::new();
        chest.sphere([45, 40, 30], 6.0);
        let f = chest.findings();
        assert!(f.focal_lesions.is_empty(), "{:?}", f.focal_lesions);
        assert_eq!(f.pattern, Pattern::Negative);
        assert!(f.total.opacity_ml > 0.0);
    }

    #[test]
    fn a_diffuse_dense_layer_is_not_focal_but_a_sphere_beside_it_is() {
        let mut chest = Chest::new();
        // posterior (dependent) layer: 18 of the right lung's 60 rows = 30 % of it
        let layer = chest.dense_box([5..55, 52..70, 10..50]);
        assert_eq!(layer, 36_000);
        let f = chest.findings();
        assert!(f.focal_lesions.is_empty(), "{:?}", f.focal_lesions);
        assert!((f.lungs[1].involvement.involvement_pct - 30.0).abs() < 1e-9);
        assert_ne!(f.pattern, Pattern::Negative);
        chest.sphere([30, 40, 90], 14.0);
        let f = chest.findings();
        assert_eq!(f.focal_lesions.len(), 1);
        assert_eq!(f.focal_lesions[0].side, Side::Left);
        // the layer is opacity above the floor: the distribution rule decides, and the lesion's
        // text does not call it atypical
        assert!(f.non_focal_involvement_pct > NOISE_FLOOR_PCT);
        assert_eq!(f.focal_lesions[0].text, "focal opacity, 1.4 mL, left middle zone");
    }

    #[test]
    fn an_elongated_dense_band_is_not_compact() {
        let mut chest = Chest::new();
        // 4 x 5 x 40 mm: equivalent diameter 11.5 mm, 40 mm > 2.5 x 11.5
        chest.dense_box([10..50, 30..34, 20..25]);
        assert!(chest.findings().focal_lesions.is_empty());
        // 12 x 12 x 12 mm cube: compact
        let mut chest = Chest::new();
        chest.dense_box([20..32, 30..42, 20..32]);
        let f = chest.findings();
        assert_eq!(f.focal_lesions.len(), 1);
        assert_eq!(f.focal_lesions[0].level, Level::Middle);
        let d = f.focal_lesions[0].max_inplane_diameter_mm;
        assert!((d - 288f64.sqrt()).abs() < 1e-9, "{d}");
    }

    #[test]
    fn ground_glass_is_not_a_dense_lesion() {
        let mut chest = Chest::new();
        chest.sphere([45, 40, 30], 16.0);
        for (h, &o) in chest.hu.iter_mut().zip(&chest.opacity) {
            if o != 0 {
                *h = -500.0;
            }
        }
        let f = chest.findings();
        assert!(f.focal_lesions.is_empty());
        // 2.1 mL of 240: below the floor, no focal lesion: negative
        assert_eq!(f.pattern, Pattern::Negative);
    }

    #[test]
    fn effusion_volumes_per_side_are_exact_on_box_masks() {
        let chest = Chest::new();
        let n = chest.hu.len();
        let spacing = [2.5, 0.8, 0.7];
        let voxel_ml = spacing.iter().product::<f64>() / 1000.0;
        let (mut left_eff, right_eff) = (vec![0u8; n], vec![0u8; n]);
        let mut hu = chest.hu.clone();
        // left effusion: posterior to the left lung, slices 5..25
        for k in 5..25 {
            for r in 70..78 {
                for c in 70..110 {
                    let i = chest.at(k, r, c);
                    left_eff[i] = 1;
                    hu[i] = if c % 2 == 0 { 10.0 } else { 14.0 };
                }
            }
        }
        let grid = Grid { hu: &hu, shape: chest.shape, spacing_mm: spacing };
        let masks = Masks {
            effusion_left: Some(&left_eff),
            effusion_right: Some(&right_eff),
            ..Masks::lungs(&chest.left, &chest.right, &chest.opacity)
        };
        let f = compute(&grid, &masks).unwrap();
        assert_eq!(f.effusions.len(), 2, "both sides listed");
        let (l, r) = (&f.effusions[0], &f.effusions[1]);
        assert_eq!(l.side, Side::Left);
        assert_eq!(l.volume_ml, (20 * 8 * 40) as f64 * voxel_ml);
        assert_eq!(l.mean_hu, Some(12.0));
        assert_eq!(l.slice_extent, Some((5, 24)));
        assert_eq!(l.craniocaudal_extent_mm, 50.0);
        assert_eq!(l.text, "left pleural effusion, 9.0 mL, mean 12 HU, cranio-caudal extent 50 mm");
        assert_eq!((r.side, r.volume_ml, r.mean_hu, r.slice_extent), (Side::Right, 0.0, None, None));
        assert_eq!(r.text, "right pleural effusion: none");
        // no lung opacity, but fluid: not negative
        assert_eq!(f.pattern, Pattern::Indeterminate);
        assert!(f.pattern_rationale.contains(&l.text), "{}", f.pattern_rationale);
        // not assessed: no effusion listed
        assert!(chest.findings().effusions.is_empty());
    }

    #[test]
    fn the_dense_dependent_region_is_listed_per_side_and_never_focal() {
        let mut chest = Chest::new();
        // a compact dense dependent region in the right lung, counted as opacity
        let voxels = chest.dense_box([5..20, 55..70, 10..25]);
        let n = chest.hu.len();
        let mut indeterminate = vec![0u8; n];
        for (d, &o) in indeterminate.iter_mut().zip(&chest.opacity) {
            *d = o;
        }
        let grid = Grid { hu: &chest.hu, shape: chest.shape, spacing_mm: [1.0; 3] };
        let masks =
            Masks { indeterminate: Some(&indeterminate), ..Masks::lungs(&chest.left, &chest.right, &chest.opacity) };
        let f = compute(&grid, &masks).unwrap();
        assert!(f.focal_lesions.is_empty(), "{:?}", f.focal_lesions);
        assert_eq!(f.indeterminate_dense.len(), 1);
        let d = &f.indeterminate_dense[0];
        assert_eq!((d.side, d.volume_ml), (Side::Right, voxels as f64 / 1000.0));
        assert_eq!(d.text, "dense dependent region: effusion or consolidation, 3.4 mL (counted as opacity)");
        assert_eq!(f.lungs[1].involvement.opacity_ml, voxels as f64 / 1000.0);
        // the same region without the indeterminate mask is a focal lesion
        assert_eq!(chest.findings().focal_lesions.len(), 1);
    }

    #[test]
    fn json_names_follow_the_vocabulary() {
        let mut chest = Chest::new();
        chest.sphere([45, 40, 30], 12.0);
        let v = serde_json::to_value(chest.findings()).unwrap();
        for term in [vocabulary::PLEURAL_EFFUSION, vocabulary::INDETERMINATE_DENSE, vocabulary::FOCAL_OPACITY] {
            assert!(v.get(term.key).is_some(), "{}", term.key);
        }
        let lesion = &v["focal_lesions"][0];
        for term in [vocabulary::VOLUME, vocabulary::EQUIVALENT_DIAMETER, vocabulary::MAX_INPLANE_DIAMETER] {
            assert!(lesion.get(term.key).is_some(), "{}", term.key);
        }
        assert_eq!(lesion["side"], "right");
        assert_eq!(lesion["level"], "upper");
        let effusion = serde_json::to_value(Effusion {
            side: Side::Left,
            volume_ml: 1.0,
            mean_hu: Some(1.0),
            craniocaudal_extent_mm: 1.0,
            slice_extent: Some((0, 0)),
            text: String::new(),
        })
        .unwrap();
        for term in [vocabulary::VOLUME, vocabulary::CRANIOCAUDAL_EXTENT] {
            assert!(effusion.get(term.key).is_some(), "{}", term.key);
        }
        assert!(effusion.get("mean_hu").is_some());
    }

    /// The README and the manifest of the model package state the code's noise floor.
    #[test]
    fn the_noise_floor_and_the_error_are_stated_once() {
        let package = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/covid19-lung-ct/0.2.2");
        let manifest = std::fs::read_to_string(package.join("manifest.toml")).unwrap();
        let value = |key: &str| {
            manifest
                .lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .and_then(|rest| rest.trim_start().strip_prefix('='))
                .and_then(|rest| rest.split('#').next())
                .map(|v| v.trim().parse::<f64>().unwrap())
                .unwrap_or_else(|| panic!("{key} in manifest.toml"))
        };
        assert_eq!(value("noise_floor_percent"), NOISE_FLOOR_PCT);
        assert_eq!(value("opacity_relative_error"), OPACITY_RELATIVE_ERROR);
        let note = manifest.lines().find(|l| l.starts_with("rsna_category_note")).expect("rsna_category_note");
        assert!(note.contains(&format!("< {NOISE_FLOOR_PCT} %")), "{note}");
        let readme = std::fs::read_to_string(package.join("README.md")).unwrap().replace('\n', " ");
        assert!(readme.contains(&format!("noise floor ({NOISE_FLOOR_PCT} %)")), "README states another noise floor");
        let bounds = format!(
            "[(m - {NOISE_FLOOR_PCT} %) / {:.2}, m / {:.2}]",
            1.0 + OPACITY_RELATIVE_ERROR,
            1.0 - OPACITY_RELATIVE_ERROR
        );
        assert!(readme.contains(&bounds), "README states another uncertainty than {bounds}");
    }

    /// A 300 x 512 x 512 volume with a few lesions and ground glass: the dense labelling and the
    /// whole computation. Timing asserted in release builds only
    /// (`cargo test --release -p firstread-findings -- --ignored --nocapture`).
    #[test]
    #[ignore = "allocates 700 MB; a timing check for release builds"]
    fn labelling_a_full_volume_is_fast() {
        let shape = [300, 512, 512];
        let n: usize = shape.iter().product();
        let plane = 512 * 512;
        let mut hu = vec![-850.0f32; n];
        let (mut left, mut right, mut opacity) = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
        for k in 20..280 {
            for r in 100..400 {
                for c in 60..230 {
                    right[k * plane + r * 512 + c] = 1;
                    left[k * plane + r * 512 + c + 220] = 1;
                }
            }
        }
        // ground glass patches and a few dense spheres
        for k in (30..270).step_by(7) {
            for r in (120..380).step_by(23) {
                for c in (80..440).step_by(31) {
                    let i = k * plane + r * 512 + c;
                    if left[i] | right[i] != 0 {
                        for d in 0..6 {
                            opacity[i + d] = 1;
                            hu[i + d] = if (k + r) % 5 == 0 { 0.0 } else { -500.0 };
                        }
                    }
                }
            }
        }
        for &(k0, r0, c0) in &[(100usize, 200usize, 150usize), (200, 300, 350), (150, 250, 300)] {
            for k in k0 - 8..k0 + 8 {
                for r in r0 - 8..r0 + 8 {
                    for c in c0 - 8..c0 + 8 {
                        let d = (k as f64 - k0 as f64).powi(2)
                            + (r as f64 - r0 as f64).powi(2)
                            + (c as f64 - c0 as f64).powi(2);
                        if d <= 49.0 {
                            opacity[k * plane + r * 512 + c] = 1;
                            hu[k * plane + r * 512 + c] = 20.0;
                        }
                    }
                }
            }
        }
        let grid = Grid { hu: &hu, shape, spacing_mm: [1.0, 0.7, 0.7] };
        let t = std::time::Instant::now();
        let components = dense::label(&grid, &opacity, &left, &right, |i| hu[i] > FOCAL_MIN_HU, 100);
        let labelling = t.elapsed();
        let t = std::time::Instant::now();
        let f = compute(&grid, &Masks::lungs(&left, &right, &opacity)).unwrap();
        let all = t.elapsed();
        println!(
            "{} dense components; labelling {labelling:?}; compute {all:?}; focal lesions {:?}",
            components.components.len(),
            f.focal_lesions.iter().map(|l| (l.side, l.level, l.equivalent_diameter_mm)).collect::<Vec<_>>()
        );
        assert_eq!(f.focal_lesions.len(), 3);
        if !cfg!(debug_assertions) {
            assert!(labelling.as_millis() < 100, "labelling took {labelling:?}");
        }
    }
}
