//! Pattern suggestion in the RSNA consensus categories for COVID-19 pneumonia on CT (Simpson et
//! al., "Radiological Society of North America Expert Consensus Statement on Reporting Chest CT
//! Findings Related to COVID-19", Radiology: Cardiothoracic Imaging 2020;2(2):e200152).
//!
//! The consensus categories are defined by morphology (ground glass, crazy paving, reverse halo,
//! nodules, cavitation...) that a volumetric opacity mask does not capture; this rule uses only
//! the distribution features the masks do give, and says so in its rationale. The noise floor is
//! [`NOISE_FLOOR_PCT`] (1 %); "focal lesions" are the [`FocalLesion`]s, "non-focal opacity" the
//! opacity outside them. In order:
//!
//! 1. **Negative for pneumonia**: opacities involve less than the noise floor of the lung volume,
//!    and there is no focal lesion, no pleural effusion and no indeterminate dense dependent region.
//! 2. **Atypical** (focal): there are focal lesions and the non-focal opacity is below the noise
//!    floor. Rationale: `focal opacity, N mL, <side> <level> zone; not typical of pneumonia`, one
//!    clause per lesion, largest first, at most [`MAX_FOCAL_IN_RATIONALE`], then the non-focal
//!    opacity.
//! 3. **Indeterminate** (not negative): opacities below the noise floor, no focal lesion, but a
//!    pleural effusion or a dense dependent region (the lung under it cannot be judged).
//! 4. **Typical**: bilateral (each lung involved at least at the noise floor), peripheral (>= 50 %
//!    of the opacity volume within 10 mm of the lung surface, in-plane) and lower-zone predominant
//!    (lower thirds more involved than upper thirds).
//! 5. **Atypical**: unilateral (one lung below the noise floor) with a central (< 50 % peripheral)
//!    or consolidation-dominant (mean opacity >= -300 HU) distribution: e.g. lobar consolidation
//!    or a mass.
//! 6. **Indeterminate**: every other distribution (e.g. bilateral but diffuse or upper-zone).
//!
//! Rules 2 to 6 also name any pleural effusion (with volume > 0) and dense dependent region in the
//! rationale.

use serde::Serialize;

use crate::{vocabulary, Effusion, FocalLesion, IndeterminateDense, MAX_FOCAL_IN_RATIONALE, NOISE_FLOOR_PCT};

/// Peripheral share at or above which a distribution is peripheral (0-1).
pub const PERIPHERAL_MIN_FRACTION: f64 = 0.5;
/// Mean opacity HU at or above which opacities are consolidation-dominant.
pub const CONSOLIDATION_MEAN_HU: f64 = -300.0;

/// RSNA consensus category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Typical appearance.
    Typical,
    /// Indeterminate appearance.
    Indeterminate,
    /// Atypical appearance.
    Atypical,
    /// Negative for pneumonia.
    Negative,
}

impl Pattern {
    /// Display name.
    pub fn label(self) -> &'static str {
        match self {
            Pattern::Typical => "typical appearance",
            Pattern::Indeterminate => "indeterminate appearance",
            Pattern::Atypical => "atypical appearance",
            Pattern::Negative => "negative for pneumonia",
        }
    }
}

/// The features the rule uses.
#[derive(Debug, Clone, Copy)]
pub struct PatternInputs<'a> {
    /// Total involvement (%).
    pub total_pct: f64,
    /// Left lung involvement (%).
    pub left_pct: f64,
    /// Right lung involvement (%).
    pub right_pct: f64,
    /// Share of the opacity volume within 10 mm of the lung surface (0-1).
    pub peripheral_fraction: Option<f64>,
    /// Involvement of the two lower zones (%).
    pub lower_zone_pct: f64,
    /// Involvement of the two upper zones (%).
    pub upper_zone_pct: f64,
    /// Mean HU of the opacities.
    pub opacity_mean_hu: Option<f64>,
    /// Dense focal lesions, largest first.
    pub focal_lesions: &'a [FocalLesion],
    /// Opacity outside the focal lesions / lung volume (%).
    pub non_focal_pct: f64,
    /// Pleural effusion per side (empty: not assessed).
    pub effusions: &'a [Effusion],
    /// Indeterminate dense dependent region per side.
    pub indeterminate_dense: &'a [IndeterminateDense],
}

/// Whether the focal lesions are the lungs' only opacity above the noise floor (rule 2: their
/// display text then says "not typical of pneumonia").
pub fn focal_lesions_isolated(i: &PatternInputs<'_>) -> bool {
    !i.focal_lesions.is_empty() && i.non_focal_pct < NOISE_FLOOR_PCT
}

/// Applies the rule; returns the category and the rationale with its numbers.
pub fn suggest_pattern(i: &PatternInputs<'_>) -> (Pattern, String) {
    let floor = format!("< {NOISE_FLOOR_PCT} %");
    let effusion = i.effusions.iter().any(|e| e.volume_ml > 0.0);
    let dense_dependent = i.indeterminate_dense.iter().any(|d| d.volume_ml > 0.0);
    // pleural effusion and the dense dependent region, as clauses for the rationale
    let pleural: Vec<String> = i
        .effusions
        .iter()
        .filter(|e| e.volume_ml > 0.0)
        .map(|e| vocabulary::effusion_text(e.side, e.volume_ml, e.mean_hu, e.craniocaudal_extent_mm))
        .chain(
            i.indeterminate_dense
                .iter()
                .map(|d| vocabulary::sided(d.side, &vocabulary::indeterminate_text(d.volume_ml))),
        )
        .collect();
    let with_pleural = |text: String| {
        if pleural.is_empty() {
            text
        } else {
            format!("{text}; {}", pleural.join("; "))
        }
    };
    if i.total_pct < NOISE_FLOOR_PCT && i.focal_lesions.is_empty() && !effusion && !dense_dependent {
        return (Pattern::Negative, format!("opacities involve {:.1} % of the lungs ({floor})", i.total_pct));
    }
    if focal_lesions_isolated(i) {
        let mut clauses: Vec<String> = i
            .focal_lesions
            .iter()
            .take(MAX_FOCAL_IN_RATIONALE)
            .map(|l| vocabulary::focal_text(l.side, l.level, l.volume_ml, true))
            .collect();
        let more = i.focal_lesions.len().saturating_sub(MAX_FOCAL_IN_RATIONALE);
        if more > 0 {
            clauses.push(format!("{more} more {}", if more == 1 { "focal opacity" } else { "focal opacities" }));
        }
        clauses.push(format!("other opacity {:.1} % of the lungs ({floor})", i.non_focal_pct));
        return (Pattern::Atypical, with_pleural(clauses.join("; ")));
    }
    if i.total_pct < NOISE_FLOOR_PCT {
        let text = format!(
            "opacities involve {:.1} % of the lungs ({floor}), but the pleural cavity holds dense fluid \
             or tissue, so the lung under it cannot be called clear",
            i.total_pct
        );
        return (Pattern::Indeterminate, with_pleural(text));
    }
    let bilateral = i.left_pct >= NOISE_FLOOR_PCT && i.right_pct >= NOISE_FLOOR_PCT;
    let peripheral = i.peripheral_fraction.unwrap_or(0.0);
    let lower = i.lower_zone_pct > i.upper_zone_pct;
    let mean = i.opacity_mean_hu.unwrap_or(-1000.0);
    let facts = with_pleural(format!(
        "left {:.1} %, right {:.1} %; {:.0} % of the opacity volume within 10 mm of the pleura; \
         lower zones {:.1} % vs upper {:.1} %; mean opacity {:.0} HU",
        i.left_pct,
        i.right_pct,
        100.0 * peripheral,
        i.lower_zone_pct,
        i.upper_zone_pct,
        mean
    ));
    if bilateral && peripheral >= PERIPHERAL_MIN_FRACTION && lower {
        (Pattern::Typical, format!("bilateral, peripheral and lower-zone predominant: {facts}"))
    } else if !bilateral && (peripheral < PERIPHERAL_MIN_FRACTION || mean >= CONSOLIDATION_MEAN_HU) {
        (Pattern::Atypical, format!("unilateral, central or consolidation-dominant: {facts}"))
    } else {
        (Pattern::Indeterminate, format!("distribution neither typical nor atypical: {facts}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Level, Side};

    fn inputs(left: f64, right: f64, peripheral: f64, lower: f64, upper: f64, hu: f64) -> PatternInputs<'static> {
        PatternInputs {
            total_pct: (left + right) / 2.0,
            left_pct: left,
            right_pct: right,
            peripheral_fraction: Some(peripheral),
            lower_zone_pct: lower,
            upper_zone_pct: upper,
            opacity_mean_hu: Some(hu),
            focal_lesions: &[],
            non_focal_pct: (left + right) / 2.0,
            effusions: &[],
            indeterminate_dense: &[],
        }
    }

    fn lesion(side: Side, level: Level, volume_ml: f64) -> FocalLesion {
        FocalLesion {
            side,
            level,
            volume_ml,
            equivalent_diameter_mm: (6000.0 * volume_ml / std::f64::consts::PI).cbrt(),
            max_inplane_diameter_mm: 20.0,
            mean_hu: 20.0,
            centroid_slice: 10,
            text: String::new(),
        }
    }

    fn effusion(side: Side, volume_ml: f64) -> Effusion {
        Effusion {
            side,
            volume_ml,
            mean_hu: (volume_ml > 0.0).then_some(10.0),
            craniocaudal_extent_mm: if volume_ml > 0.0 { 60.0 } else { 0.0 },
            slice_extent: (volume_ml > 0.0).then_some((0, 59)),
            text: String::new(),
        }
    }

    #[test]
    fn categories() {
        assert_eq!(suggest_pattern(&inputs(0.2, 0.3, 0.9, 1.0, 0.0, -600.0)).0, Pattern::Negative);
        assert_eq!(suggest_pattern(&inputs(20.0, 25.0, 0.8, 30.0, 10.0, -600.0)).0, Pattern::Typical);
        assert_eq!(suggest_pattern(&inputs(20.0, 25.0, 0.8, 5.0, 30.0, -600.0)).0, Pattern::Indeterminate);
        assert_eq!(suggest_pattern(&inputs(0.0, 12.0, 0.2, 5.0, 10.0, -100.0)).0, Pattern::Atypical);
        assert_eq!(suggest_pattern(&inputs(0.0, 12.0, 0.9, 15.0, 1.0, -650.0)).0, Pattern::Indeterminate);
        let (_, why) = suggest_pattern(&inputs(20.0, 25.0, 0.8, 30.0, 10.0, -600.0));
        assert!(why.contains("80 % of the opacity volume"), "{why}");
        let (_, why) = suggest_pattern(&inputs(0.2, 0.3, 0.9, 1.0, 0.0, -600.0));
        assert_eq!(why, "opacities involve 0.2 % of the lungs (< 1 %)");
    }

    #[test]
    fn negative_only_below_the_floor_without_focal_lesion_effusion_or_dense_region() {
        let none = [effusion(Side::Left, 0.0), effusion(Side::Right, 0.0)];
        let base = PatternInputs { effusions: &none, ..inputs(0.2, 0.3, 0.9, 1.0, 0.0, -600.0) };
        assert_eq!(suggest_pattern(&base).0, Pattern::Negative, "0 mL effusions do not count");

        let fluid = [effusion(Side::Left, 0.0), effusion(Side::Right, 150.0)];
        let (p, why) = suggest_pattern(&PatternInputs { effusions: &fluid, ..base });
        assert_eq!(p, Pattern::Indeterminate);
        assert!(why.contains("right pleural effusion, 150.0 mL"), "{why}");

        let dense = [IndeterminateDense { side: Side::Left, volume_ml: 3.0, text: String::new() }];
        let (p, why) = suggest_pattern(&PatternInputs { indeterminate_dense: &dense, ..base });
        assert_eq!(p, Pattern::Indeterminate);
        assert!(why.contains("left dense dependent region: effusion or consolidation, 3.0 mL (counted as opacity)"));
    }

    #[test]
    fn focal_lesions_alone_are_atypical_largest_first_at_most_three() {
        let lesions = [
            lesion(Side::Right, Level::Upper, 4.2),
            lesion(Side::Left, Level::Lower, 1.5),
            lesion(Side::Left, Level::Middle, 0.9),
            lesion(Side::Right, Level::Lower, 0.6),
        ];
        let i =
            PatternInputs { focal_lesions: &lesions[..1], non_focal_pct: 0.1, ..inputs(0.1, 0.3, 0.9, 1.0, 0.0, 0.0) };
        let (p, why) = suggest_pattern(&i);
        assert_eq!(p, Pattern::Atypical);
        assert!(why.starts_with("focal opacity, 4.2 mL, right upper zone; not typical of pneumonia"), "{why}");
        assert!(focal_lesions_isolated(&i));

        let i = PatternInputs { focal_lesions: &lesions, ..i };
        let (p, why) = suggest_pattern(&i);
        assert_eq!(p, Pattern::Atypical);
        assert_eq!(
            why,
            "focal opacity, 4.2 mL, right upper zone; not typical of pneumonia; \
             focal opacity, 1.5 mL, left lower zone; not typical of pneumonia; \
             focal opacity, 0.9 mL, left middle zone; not typical of pneumonia; \
             1 more focal opacity; other opacity 0.1 % of the lungs (< 1 %)"
        );

        // a focal lesion within a wider process: the distribution rule decides
        let i = PatternInputs {
            focal_lesions: &lesions[..1],
            non_focal_pct: 20.0,
            ..inputs(20.0, 25.0, 0.8, 30.0, 10.0, -600.0)
        };
        assert_eq!(suggest_pattern(&i).0, Pattern::Typical);
        assert!(!focal_lesions_isolated(&i));
    }
}
