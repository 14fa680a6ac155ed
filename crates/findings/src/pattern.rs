//! Pattern suggestion in the RSNA consensus categories for COVID-19 pneumonia on CT (Simpson et
//! al., "Radiological Society of North America Expert Consensus Statement on Reporting Chest CT
//! Findings Related to COVID-19", Radiology: Cardiothoracic Imaging 2020;2(2):e200152).
//!
//! The consensus categories are defined by morphology (ground glass, crazy paving, reverse halo,
//! nodules, cavitation...) that a volumetric opacity mask does not capture; this rule uses only
//! the distribution features the mask does give, and says so in its rationale:
//!
//! 1. **Negative for pneumonia**: opacities involve < 1 % of the lung volume.
//! 2. **Typical**: bilateral (each lung >= 1 % involved), peripheral (>= 50 % of the opacity volume
//!    within 10 mm of the lung surface, in-plane) and lower-zone predominant (lower thirds more
//!    involved than upper thirds).
//! 3. **Atypical**: unilateral (one lung < 1 %) with a central (< 50 % peripheral) or
//!    consolidation-dominant (mean opacity >= -300 HU) distribution: e.g. lobar consolidation or a
//!    mass.
//! 4. **Indeterminate**: every other distribution (e.g. bilateral but diffuse or upper-zone).

use serde::Serialize;

use crate::INVOLVED_MIN_PCT;

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

/// The distribution features the rule uses.
#[derive(Debug, Clone, Copy)]
pub struct PatternInputs {
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
}

/// Applies the rule; returns the category and the rationale with its numbers.
pub fn suggest_pattern(i: &PatternInputs) -> (Pattern, String) {
    if i.total_pct < INVOLVED_MIN_PCT {
        return (Pattern::Negative, format!("opacities involve {:.1} % of the lungs (< 1 %)", i.total_pct));
    }
    let bilateral = i.left_pct >= INVOLVED_MIN_PCT && i.right_pct >= INVOLVED_MIN_PCT;
    let peripheral = i.peripheral_fraction.unwrap_or(0.0);
    let lower = i.lower_zone_pct > i.upper_zone_pct;
    let mean = i.opacity_mean_hu.unwrap_or(-1000.0);
    let facts = format!(
        "left {:.1} %, right {:.1} %; {:.0} % of the opacity volume within 10 mm of the pleura; \
         lower zones {:.1} % vs upper {:.1} %; mean opacity {:.0} HU",
        i.left_pct,
        i.right_pct,
        100.0 * peripheral,
        i.lower_zone_pct,
        i.upper_zone_pct,
        mean
    );
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

    fn inputs(left: f64, right: f64, peripheral: f64, lower: f64, upper: f64, hu: f64) -> PatternInputs {
        PatternInputs {
            total_pct: (left + right) / 2.0,
            left_pct: left,
            right_pct: right,
            peripheral_fraction: Some(peripheral),
            lower_zone_pct: lower,
            upper_zone_pct: upper,
            opacity_mean_hu: Some(hu),
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
    }
}
