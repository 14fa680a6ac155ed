//! The one place that names each finding: its name in the job JSON, its coded concept (the SR
//! concept name or the SEG Segmented Property Type), its unit (UCUM code and display symbol), its
//! display label, and the display texts built from them. The SR (`firstread-report`), the key
//! image legend and `firstread demo` take their codes, units and texts from here.
//!
//! Codes: SNOMED CT (`SCT`) and DICOM (`DCM`) where a standard concept fits; otherwise firstread's
//! private coding scheme [`LOCAL_SCHEME`] (declared by the SR in its Coding Scheme Identification
//! Sequence). Code values fit SH (16 characters), meanings LO (64).

use crate::{ExtentClass, Findings, Level, Pattern, Side, NOISE_FLOOR_PCT, OPACITY_RELATIVE_ERROR};

/// Coding Scheme Designator of firstread's private codes ("99" prefix: private or local, PS3.3 8.2).
pub const LOCAL_SCHEME: &str = "99FIRSTREAD";

/// A coded concept (PS3.3 Table 8.8-1 Code Sequence Macro).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// Code Value.
    pub value: &'static str,
    /// Coding Scheme Designator.
    pub scheme: &'static str,
    /// Code Meaning.
    pub meaning: &'static str,
}

/// A unit of measurement: its UCUM code (SR Measurement Units Code Sequence) and display symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// UCUM code value (scheme "UCUM").
    pub ucum: &'static str,
    /// Code Meaning.
    pub meaning: &'static str,
    /// Display symbol.
    pub symbol: &'static str,
}

/// Millilitre.
pub const ML: Unit = Unit { ucum: "ml", meaning: "milliliter", symbol: "mL" };
/// Millimetre.
pub const MM: Unit = Unit { ucum: "mm", meaning: "millimeter", symbol: "mm" };
/// Hounsfield unit.
pub const HU: Unit = Unit { ucum: "[hnsf'U]", meaning: "Hounsfield unit", symbol: "HU" };
/// Percent.
pub const PERCENT: Unit = Unit { ucum: "%", meaning: "percent", symbol: "%" };
/// A score (UCUM annotation `{score}`).
pub const SCORE: Unit = Unit { ucum: "{score}", meaning: "score", symbol: "points" };

/// A named finding or measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    /// Its field name in the job JSON (`result.findings`).
    pub key: &'static str,
    /// Its coded concept.
    pub code: Code,
    /// What it means.
    pub meaning: &'static str,
    /// The unit of its value (numeric measurements only).
    pub unit: Option<Unit>,
    /// Display label.
    pub label: &'static str,
}

// --- findings ---

/// Pleural effusion, per side (SNOMED CT 60046008; also the SEG Segmented Property Type of the
/// effusion segments).
pub const PLEURAL_EFFUSION: Term = Term {
    key: "effusions",
    code: Code { value: "60046008", scheme: "SCT", meaning: "Pleural effusion" },
    meaning: "fluid in the pleural cavity, outside the lung; per side, both sides listed when assessed",
    unit: None,
    label: "pleural effusion",
};

/// A dense dependent region the method cannot call effusion or consolidation (inside the lung
/// and opacity masks, counted as opacity).
pub const INDETERMINATE_DENSE: Term = Term {
    key: "indeterminate_dense",
    code: Code {
        value: "DENSE-DEPENDENT",
        scheme: LOCAL_SCHEME,
        meaning: "Dense dependent region (effusion or consolidation)",
    },
    meaning: "dense dependent region that is effusion or consolidation; counted as lung opacity",
    unit: None,
    label: "dense dependent region",
};

/// A dense focal lesion: a compact connected component of consolidation-density opacity
/// (`crate::FOCAL_MIN_DIAMETER_MM` and the rules of [`crate::FocalLesion`]).
pub const FOCAL_OPACITY: Term = Term {
    key: "focal_lesions",
    code: Code { value: "FOCAL-OPACITY", scheme: LOCAL_SCHEME, meaning: "Focal dense lung opacity" },
    meaning: "compact connected component of opacity denser than -300 HU, at least 10 mm across",
    unit: None,
    label: "focal opacity",
};

// --- measurements of those findings ---

/// Volume (mL).
pub const VOLUME: Term = Term {
    key: "volume_ml",
    code: Code { value: "118565006", scheme: "SCT", meaning: "Volume" },
    meaning: "voxel count x voxel volume",
    unit: Some(ML),
    label: "volume",
};

/// Mean attenuation (HU): the SR writes it as Attenuation Coefficient with Derivation = Mean.
pub const MEAN_ATTENUATION: Term = Term {
    key: "mean_hu",
    code: Code { value: "112031", scheme: "DCM", meaning: "Attenuation Coefficient" },
    meaning: "mean HU of the region's voxels",
    unit: Some(HU),
    label: "mean",
};

/// Cranio-caudal extent (mm).
pub const CRANIOCAUDAL_EXTENT: Term = Term {
    key: "craniocaudal_extent_mm",
    code: Code { value: "CC-EXTENT", scheme: LOCAL_SCHEME, meaning: "Cranio-caudal extent" },
    meaning: "(last - first + 1) slices holding the region x slice spacing",
    unit: Some(MM),
    label: "cranio-caudal extent",
};

/// Equivalent-sphere diameter (mm).
pub const EQUIVALENT_DIAMETER: Term = Term {
    key: "equivalent_diameter_mm",
    code: Code { value: "EQUIV-DIAMETER", scheme: LOCAL_SCHEME, meaning: "Equivalent sphere diameter" },
    meaning: "diameter of the sphere of the same volume, (6 V / pi)^(1/3)",
    unit: Some(MM),
    label: "equivalent diameter",
};

/// Largest in-plane diameter (mm), the axial long axis.
pub const MAX_INPLANE_DIAMETER: Term = Term {
    key: "max_inplane_diameter_mm",
    code: Code { value: "103339001", scheme: "SCT", meaning: "Long Axis" },
    meaning: "largest distance across the lesion's pixels within one axial slice, over its slices",
    unit: Some(MM),
    label: "max in-plane diameter",
};

/// A caution about the result itself (not a finding): the reader must check it.
pub const CAUTION: Term = Term {
    key: "cautions",
    code: Code { value: "CAUTION", scheme: LOCAL_SCHEME, meaning: "Caution about this result" },
    meaning: "what the reader must know about the result, e.g. one lung much smaller than the other",
    unit: None,
    label: "caution",
};

// --- the read's headline measurements ---

/// Lung involvement: opacity volume / lung volume (%), per lung and both lungs.
pub const INVOLVEMENT: Term = Term {
    key: "involvement_pct",
    code: Code { value: "INVOLVEMENT", scheme: LOCAL_SCHEME, meaning: "Lung involvement by opacity" },
    meaning: "opacity volume / lung volume x 100",
    unit: Some(PERCENT),
    label: "lung involvement",
};

/// Opacity volume (mL), per lung.
pub const OPACITY_VOLUME: Term = Term {
    key: "opacity_ml",
    code: Code { value: "OPACITY-VOLUME", scheme: LOCAL_SCHEME, meaning: "Lung opacity volume" },
    meaning: "volume of the lung's ground-glass and consolidation voxels",
    unit: Some(ML),
    label: "opacity volume",
};

/// CT severity score 0-30 (Francone et al., Eur Radiol 2020): the sum of six zone scores.
pub const SEVERITY_SCORE: Term = Term {
    key: "severity_score",
    code: Code { value: "SEVERITY-SCORE", scheme: LOCAL_SCHEME, meaning: "CT severity score (0-30)" },
    meaning: "sum of the six zone scores 0-5 (Francone 2020)",
    unit: Some(SCORE),
    label: "CT severity score",
};

/// Zone score 0-5 (Francone 2020).
pub const ZONE_SCORE: Term = Term {
    key: "score",
    code: Code { value: "ZONE-SCORE", scheme: LOCAL_SCHEME, meaning: "Zone CT severity score (0-5)" },
    meaning: "0: none; 1: < 5 %; 2: 5-25 %; 3: 26-50 %; 4: 51-75 %; 5: > 75 % of the zone",
    unit: Some(SCORE),
    label: "zone score",
};

/// SFR extent class of the involvement (coded by [`extent_code`]).
pub const EXTENT_CLASS: Term = Term {
    key: "extent_class",
    code: Code { value: "EXTENT-CLASS", scheme: LOCAL_SCHEME, meaning: "SFR extent class" },
    meaning: "Societe Francaise de Radiologie extent class of the total involvement",
    unit: None,
    label: "extent class",
};

/// An extent class other than the measured one that the method's error allows
/// ([`crate::Uncertainty`]; coded by [`extent_code`]): "possibly moderate".
pub const POSSIBLE_EXTENT_CLASS: Term = Term {
    key: "uncertainty.extent_class",
    code: Code { value: "EXTENT-POSSIBLE", scheme: LOCAL_SCHEME, meaning: "Extent class within the method's error" },
    meaning: "an SFR extent class the true involvement may have, given the method's validated error",
    unit: None,
    label: "possibly",
};

/// The range of involvement, extent class and score the method's error allows, as text
/// ([`uncertainty_text`]).
pub const UNCERTAINTY: Term = Term {
    key: "uncertainty",
    code: Code { value: "WITHIN-ERROR", scheme: LOCAL_SCHEME, meaning: "Range within the method's validated error" },
    meaning: "involvement, extent class and CT severity score the truth may have, given the method's validated error",
    unit: None,
    label: "within the method's error",
};

/// The suggested RSNA consensus category (Simpson et al. 2020; coded by [`pattern_code`]).
pub const RSNA_SUGGESTION: Term = Term {
    key: "pattern",
    code: Code { value: "RSNA-SUGGESTION", scheme: LOCAL_SCHEME, meaning: "Suggested RSNA CT category" },
    meaning: "RSNA consensus category the distribution suggests (a suggestion, not a diagnosis)",
    unit: None,
    label: "pattern suggestion",
};

/// Private code of an SFR extent class.
pub fn extent_code(class: ExtentClass) -> Code {
    let value = match class {
        ExtentClass::NoneOrMinimal => "SFR-MINIMAL",
        ExtentClass::Moderate => "SFR-MODERATE",
        ExtentClass::Extensive => "SFR-EXTENSIVE",
        ExtentClass::Severe => "SFR-SEVERE",
        ExtentClass::Critical => "SFR-CRITICAL",
    };
    Code { value, scheme: LOCAL_SCHEME, meaning: class.label() }
}

/// Private code of an RSNA consensus category (Simpson et al. 2020).
pub fn pattern_code(pattern: Pattern) -> Code {
    let value = match pattern {
        Pattern::Typical => "RSNA-TYPICAL",
        Pattern::Indeterminate => "RSNA-INDETERM",
        Pattern::Atypical => "RSNA-ATYPICAL",
        Pattern::Negative => "RSNA-NEGATIVE",
    };
    Code { value, scheme: LOCAL_SCHEME, meaning: pattern.label() }
}

/// Every term, for checks and listings.
pub const ALL: [Term; 17] = [
    INVOLVEMENT,
    OPACITY_VOLUME,
    SEVERITY_SCORE,
    ZONE_SCORE,
    EXTENT_CLASS,
    POSSIBLE_EXTENT_CLASS,
    UNCERTAINTY,
    RSNA_SUGGESTION,
    PLEURAL_EFFUSION,
    INDETERMINATE_DENSE,
    FOCAL_OPACITY,
    VOLUME,
    MEAN_ATTENUATION,
    CRANIOCAUDAL_EXTENT,
    EQUIVALENT_DIAMETER,
    MAX_INPLANE_DIAMETER,
    CAUTION,
];

/// Manifest output roles (`[[outputs]] name`) of the masks the pleural-cavity stage adds.
pub mod roles {
    /// Left pleural effusion.
    pub const LEFT_PLEURAL_EFFUSION: &str = "left_pleural_effusion";
    /// Right pleural effusion.
    pub const RIGHT_PLEURAL_EFFUSION: &str = "right_pleural_effusion";

    /// The effusion role of a side.
    pub fn pleural_effusion(side: crate::Side) -> &'static str {
        match side {
            crate::Side::Left => LEFT_PLEURAL_EFFUSION,
            crate::Side::Right => RIGHT_PLEURAL_EFFUSION,
        }
    }
}

// --- display texts ---

/// "right pleural effusion, 120.5 mL, mean 12 HU, cranio-caudal extent 85 mm"; "left pleural
/// effusion: none" when its volume is 0.
pub fn effusion_text(side: Side, volume_ml: f64, mean_hu: Option<f64>, extent_mm: f64) -> String {
    if volume_ml <= 0.0 {
        return format!("{} {}: none", side.name(), PLEURAL_EFFUSION.label);
    }
    let mut text = format!("{} {}, {volume_ml:.1} {}", side.name(), PLEURAL_EFFUSION.label, ML.symbol);
    if let Some(hu) = mean_hu {
        text.push_str(&format!(", {} {hu:.0} {}", MEAN_ATTENUATION.label, HU.symbol));
    }
    text.push_str(&format!(", {} {extent_mm:.0} {}", CRANIOCAUDAL_EXTENT.label, MM.symbol));
    text
}

/// "dense dependent region: effusion or consolidation, 12.0 mL (counted as opacity)" (the side is
/// a separate field; listings put it in front with [`sided`]).
pub fn indeterminate_text(volume_ml: f64) -> String {
    format!(
        "{}: effusion or consolidation, {volume_ml:.1} {} (counted as opacity)",
        INDETERMINATE_DENSE.label, ML.symbol
    )
}

/// `text` after its side: "right dense dependent region: ...".
pub fn sided(side: Side, text: &str) -> String {
    format!("{} {text}", side.name())
}

/// What a focal lesion adds to the pattern rationale when it is the only opacity.
pub const NOT_TYPICAL_OF_PNEUMONIA: &str = "not typical of pneumonia";

/// "focal opacity, 14.1 mL, right upper zone", followed by "; not typical of pneumonia" when
/// `isolated` (the lesions are the lungs' only opacity above the noise floor).
pub fn focal_text(side: Side, level: Level, volume_ml: f64, isolated: bool) -> String {
    let mut text =
        format!("{}, {volume_ml:.1} {}, {} {} zone", FOCAL_OPACITY.label, ML.symbol, side.name(), level.name());
    if isolated {
        text.push_str("; ");
        text.push_str(NOT_TYPICAL_OF_PNEUMONIA);
    }
    text
}

/// A reported value: a number with its unit, a code, or text.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportedValue {
    /// A number, shown with `decimals` decimals.
    Number {
        /// The value.
        value: f64,
        /// Its unit.
        unit: Unit,
        /// Decimals shown.
        decimals: usize,
    },
    /// A coded value.
    Coded(Code),
    /// Text.
    Text(String),
}

/// One line of the result as messages carry it (an HL7 OBX, a FHIR Observation, a row of the
/// webhook's `measurements`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    /// What it is.
    pub term: Term,
    /// The lung it is about, where it is per side.
    pub side: Option<Side>,
    /// Its value.
    pub value: ReportedValue,
    /// Outside its normal range (`Some(true)`), within it, or no normal range defined (`None`).
    pub abnormal: Option<bool>,
    /// The normal range as text, where one is defined.
    pub reference_range: Option<&'static str>,
}

/// The involvement below which the SFR class is "none or minimal": the normal range of the
/// involvement and the extent class in messages.
pub const INVOLVEMENT_NORMAL_BELOW_PCT: f64 = 10.0;

/// The result's headline measurements and findings, in the order messages list them: extent
/// class, severity score, involvement (both lungs, then each), opacity volume per lung, pleural
/// effusion per side, indeterminate dense regions, focal opacities, suggested RSNA category.
///
/// Flags: the involvement and the extent class are abnormal from the SFR class "moderate"
/// (>= [`INVOLVEMENT_NORMAL_BELOW_PCT`]); an effusion, a dense dependent region or a focal
/// opacity is abnormal whenever reported; volumes and the score carry no range.
pub fn reported(f: &Findings) -> Vec<Reported> {
    let number = |value: f64, unit: Unit, decimals: usize| ReportedValue::Number { value, unit, decimals };
    let line = |term: Term, side: Option<Side>, value: ReportedValue, abnormal: Option<bool>| Reported {
        term,
        side,
        value,
        abnormal,
        reference_range: None,
    };
    let involvement = |side: Option<Side>, pct: f64| Reported {
        reference_range: Some("<10"),
        ..line(INVOLVEMENT, side, number(pct, PERCENT, 1), Some(pct >= INVOLVEMENT_NORMAL_BELOW_PCT))
    };
    let mut out = vec![line(
        EXTENT_CLASS,
        None,
        ReportedValue::Coded(extent_code(f.extent_class)),
        Some(f.extent_class > ExtentClass::NoneOrMinimal),
    )];
    out.extend(f.uncertainty.other_classes(f.extent_class).into_iter().map(|c| {
        line(POSSIBLE_EXTENT_CLASS, None, ReportedValue::Coded(extent_code(c)), Some(c > ExtentClass::NoneOrMinimal))
    }));
    out.extend([
        line(SEVERITY_SCORE, None, number(f64::from(f.severity_score), SCORE, 0), None),
        involvement(None, f.total.involvement_pct),
        line(UNCERTAINTY, None, ReportedValue::Text(uncertainty_text(f)), None),
    ]);
    out.extend(f.lungs.iter().map(|l| involvement(Some(l.side), l.involvement.involvement_pct)));
    out.extend(
        f.lungs.iter().map(|l| line(OPACITY_VOLUME, Some(l.side), number(l.involvement.opacity_ml, ML, 1), None)),
    );
    out.extend(
        f.effusions
            .iter()
            .map(|e| line(PLEURAL_EFFUSION, Some(e.side), number(e.volume_ml, ML, 1), Some(e.volume_ml > 0.0))),
    );
    out.extend(
        f.indeterminate_dense
            .iter()
            .map(|d| line(INDETERMINATE_DENSE, Some(d.side), number(d.volume_ml, ML, 1), Some(true))),
    );
    out.extend(
        f.focal_lesions
            .iter()
            .map(|l| line(FOCAL_OPACITY, Some(l.side), ReportedValue::Text(l.text.clone()), Some(true))),
    );
    out.push(line(RSNA_SUGGESTION, None, ReportedValue::Coded(pattern_code(f.pattern)), None));
    out
}

/// One line a person reads first: "Lung involvement 22.4 %, extent class moderate (10-25 %),
/// CT severity score 12/30; right pleural effusion, 80.0 mL, ...; focal opacity, ...".
pub fn summary_text(f: &Findings) -> String {
    let mut text = format!(
        "{} {:.1} {}, {} {}, {} {}",
        capitalised(INVOLVEMENT.label),
        f.total.involvement_pct,
        PERCENT.symbol,
        EXTENT_CLASS.label,
        class_text(f),
        SEVERITY_SCORE.label,
        score_text(f),
    );
    for e in f.effusions.iter().filter(|e| e.volume_ml > 0.0) {
        text.push_str("; ");
        text.push_str(&e.text);
    }
    for d in &f.indeterminate_dense {
        text.push_str("; ");
        text.push_str(&sided(d.side, &d.text));
    }
    for l in &f.focal_lesions {
        text.push_str("; ");
        text.push_str(&l.text);
    }
    text
}

/// The extent class with the others the method's error allows: "none or minimal (<10 %),
/// possibly moderate (10-25 %)"; the class alone when it is certain.
pub fn class_text(f: &Findings) -> String {
    let mut text = f.extent_class.label().to_owned();
    for c in f.uncertainty.other_classes(f.extent_class) {
        text.push_str(&format!(", {} {}", POSSIBLE_EXTENT_CLASS.label, c.label()));
    }
    text
}

/// The CT severity score with the range the method's error allows: "11/30 (9-12 within the
/// method's error)"; "11/30" when the range is that one score.
pub fn score_text(f: &Findings) -> String {
    let [lo, hi] = f.uncertainty.severity_score;
    if lo == hi {
        format!("{}/30", f.severity_score)
    } else {
        format!("{}/30 ({lo}-{hi} {})", f.severity_score, UNCERTAINTY.label)
    }
}

/// "within the method's error (opacity within 15 %, up to 1 % false-positive opacity):
/// involvement 7.4-11.2 %, extent class none or minimal (<10 %) to moderate (10-25 %), CT severity
/// score 9-12".
pub fn uncertainty_text(f: &Findings) -> String {
    let u = &f.uncertainty;
    let [lo, hi] = u.involvement_pct;
    let classes = if u.extent_class[0] == u.extent_class[1] {
        u.extent_class[0].label().to_owned()
    } else {
        format!("{} to {}", u.extent_class[0].label(), u.extent_class[1].label())
    };
    let [slo, shi] = u.severity_score;
    let score = if slo == shi { slo.to_string() } else { format!("{slo}-{shi}") };
    format!(
        "{} (opacity within {:.0} {}, up to {NOISE_FLOOR_PCT} {} false-positive opacity): {} {lo:.1}-{hi:.1} {}, {} {classes}, {} {score}",
        UNCERTAINTY.label,
        100.0 * OPACITY_RELATIVE_ERROR,
        PERCENT.symbol,
        PERCENT.symbol,
        INVOLVEMENT.label,
        PERCENT.symbol,
        EXTENT_CLASS.label,
        SEVERITY_SCORE.label,
    )
}

/// `text` with its first letter upper case (for lines that start with it).
pub fn capitalised(text: &str) -> String {
    let mut c = text.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_fit_their_vrs_and_keys_are_unique() {
        let mut keys = std::collections::HashSet::new();
        for t in ALL {
            assert!(t.code.value.len() <= 16 && t.code.scheme.len() <= 16, "{}", t.code.value);
            assert!(t.code.meaning.chars().count() <= 64, "{}", t.code.meaning);
            assert!(keys.insert(t.key), "{}", t.key);
        }
    }

    #[test]
    fn texts() {
        assert_eq!(
            effusion_text(Side::Right, 120.46, Some(12.2), 85.0),
            "right pleural effusion, 120.5 mL, mean 12 HU, cranio-caudal extent 85 mm"
        );
        assert_eq!(effusion_text(Side::Left, 0.0, None, 0.0), "left pleural effusion: none");
        assert_eq!(
            indeterminate_text(12.04),
            "dense dependent region: effusion or consolidation, 12.0 mL (counted as opacity)"
        );
        assert_eq!(
            sided(Side::Left, &indeterminate_text(12.04)),
            "left dense dependent region: effusion or consolidation, 12.0 mL (counted as opacity)"
        );
        assert_eq!(
            focal_text(Side::Left, Level::Upper, 3.21, true),
            "focal opacity, 3.2 mL, left upper zone; not typical of pneumonia"
        );
        assert_eq!(focal_text(Side::Right, Level::Lower, 3.21, false), "focal opacity, 3.2 mL, right lower zone");
        assert_eq!(capitalised("right lung"), "Right lung");
    }
}
