//! The one place that names each finding: its name in the job JSON, its coded concept (the SR
//! concept name or the SEG Segmented Property Type), its unit (UCUM code and display symbol), its
//! display label, and the display texts built from them. The SR (`firstread-report`), the key
//! image legend and `firstread demo` take their codes, units and texts from here.
//!
//! Codes: SNOMED CT (`SCT`) and DICOM (`DCM`) where a standard concept fits; otherwise firstread's
//! private coding scheme [`LOCAL_SCHEME`] (declared by the SR in its Coding Scheme Identification
//! Sequence). Code values fit SH (16 characters), meanings LO (64).

use crate::{Level, Side};

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

/// Every term, for checks and listings.
pub const ALL: [Term; 9] = [
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
