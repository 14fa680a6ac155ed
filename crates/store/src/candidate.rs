//! What can become the analysed volume: the rules shared by the volume builder's series choice
//! (`firstread_volume`, which reads the files) and study assembly's early readiness
//! (`firstread_queue::assembly`, which reads the index), so that what makes a study ready early
//! is what will be read.
//!
//! - [`instance_kind`]: only original CT images count: SOP Class CT Image Storage, Modality CT,
//!   Image Type (0008,0008) containing ORIGINAL and PRIMARY and neither LOCALIZER nor SCOUT.
//!   Localizers, derived images, dose reports, secondary captures and other objects do not.
//! - [`unit_cosines`] and [`is_axial`]: an Image Orientation (Patient) whose row cosines are
//!   within [`AXIS_TOLERANCE_RAD`] of ±x and column cosines within it of ±y (PS3.3 C.7.6.2.1.1).
//! - Slice positions along the normal closer than [`DUPLICATE_MM`] are one slice; a difference
//!   between neighbouring positions above [`GAP_FACTOR`] x their [`median`] is a missing slice.
//! - [`Takes`]: which studies and series a model package takes (its manifest's `[takes]`): the
//!   volume builder skips a series it does not take, study assembly queues no job for a study it
//!   does not take.

use dicom_dictionary_std::uids;
use serde::{Deserialize, Serialize};

/// Which studies a model package takes, from its manifest's `[takes]` table. An empty list
/// takes any value. Applied by study assembly (no analysis job for a study it does not take:
/// site, calling AE title, and some CT series of the study with a Body Part Examined it takes)
/// and by the volume builder (a series with another Body Part Examined is no candidate).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Takes {
    /// Modality (0008,0060) of the analysed series. The node builds volumes from CT only, so
    /// this is `["CT"]` (the default); another value is refused when the manifest is loaded.
    pub modality: Vec<String>,
    /// Body Part Examined (0018,0015) values taken, as PS3.16 Annex L defined terms (CHEST,
    /// CHESTABDOMEN, ...); compared after [`normalise_body_part`]. Empty: any body part.
    pub body_part: Vec<String>,
    /// Whether a series without Body Part Examined (absent or empty: it is Type 3, and many
    /// scanners leave it out) is taken. Default true: a chest CT is not missed for a missing tag.
    pub body_part_absent: bool,
    /// Calling AE titles of the senders whose studies are taken (an instance of the study came
    /// from one of them). Empty: any sender.
    pub calling_ae_title: Vec<String>,
    /// Sites whose studies are taken. Empty: every site.
    pub site: Vec<String>,
}

/// Every CT study: what a key left out of `[takes]` (or a manifest without it) takes.
impl Default for Takes {
    fn default() -> Self {
        Takes {
            modality: vec!["CT".to_owned()],
            body_part: Vec::new(),
            body_part_absent: true,
            calling_ae_title: Vec::new(),
            site: Vec::new(),
        }
    }
}

/// Body Part Examined as compared: surrounding spaces (CS padding) and inner spaces removed,
/// upper case (`"Chest "` and `"CHEST"` are one value).
pub fn normalise_body_part(value: &str) -> String {
    value.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_uppercase()
}

impl Takes {
    /// Whether a series with this Body Part Examined is taken.
    pub fn takes_body_part(&self, body_part: Option<&str>) -> bool {
        let value = body_part.map(normalise_body_part).filter(|v| !v.is_empty());
        match value {
            None => self.body_part_absent,
            Some(_) if self.body_part.is_empty() => true,
            Some(v) => self.body_part.iter().any(|b| normalise_body_part(b) == v),
        }
    }

    /// The rule in words, for reasons and logs: "Body Part Examined CHEST or LUNG (or absent)".
    pub fn describe_body_part(&self) -> String {
        if self.body_part.is_empty() {
            return "any Body Part Examined".to_owned();
        }
        let absent = if self.body_part_absent { " (or absent)" } else { "" };
        format!("Body Part Examined {}{absent}", self.body_part.join(" or "))
    }

    /// What is wrong with it, if anything: a modality other than CT, an empty value.
    ///
    /// # Errors
    /// The problem in words.
    pub fn check(&self) -> Result<(), String> {
        if self.modality.is_empty() || self.modality.iter().any(|m| !m.trim().eq_ignore_ascii_case("CT")) {
            return Err(format!(
                "takes.modality {:?}: the node builds volumes from CT images only (modality = [\"CT\"])",
                self.modality
            ));
        }
        let lists =
            [("body_part", &self.body_part), ("calling_ae_title", &self.calling_ae_title), ("site", &self.site)];
        for (key, values) in lists {
            if values.iter().any(|v| v.trim().is_empty()) {
                return Err(format!("takes.{key} holds an empty value (leave the list empty to take any)"));
            }
        }
        Ok(())
    }
}

/// Positions closer than this along the normal (mm) are the same slice.
pub const DUPLICATE_MM: f64 = 0.01;
/// Largest angle (rad) between a direction cosine and the axis it is taken for.
pub const AXIS_TOLERANCE_RAD: f64 = 0.1;
/// A gap is a position difference larger than this multiple of the median spacing.
pub const GAP_FACTOR: f64 = 1.5;

/// What an instance is, for series choice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum InstanceKind {
    /// An original CT image: a candidate slice.
    OriginalImage,
    /// A localizer or scout (its Image Type).
    Localizer(String),
    /// A derived or secondary image, e.g. a reformat (its Image Type).
    Derived(String),
    /// Enhanced CT (multi-frame), not supported yet.
    EnhancedCt,
    /// CT Image Storage with another Modality (the Modality).
    NotCtModality(String),
    /// Another SOP Class: dose reports, secondary captures, SR, presentation states (its UID).
    OtherSopClass(String),
}

impl InstanceKind {
    /// The kind in words, for the reasons of series decisions.
    pub fn describe(&self) -> String {
        match self {
            InstanceKind::OriginalImage => "original CT image".to_owned(),
            InstanceKind::Localizer(t) => format!("localizer/scout (Image Type {t})"),
            InstanceKind::Derived(t) => format!("derived or secondary image, e.g. a reformat (Image Type {t})"),
            InstanceKind::EnhancedCt => "Enhanced CT (multi-frame) is not supported yet".to_owned(),
            InstanceKind::NotCtModality(m) => format!("CT Image Storage with Modality {m}, not CT"),
            InstanceKind::OtherSopClass(uid) => format!("not a CT image: {} ({uid})", sop_class_name(uid)),
        }
    }
}

/// Classifies one instance by SOP Class UID (0008,0016), Modality (0008,0060) and Image Type
/// (0008,0008, backslash-separated). A missing Modality or Image Type does not exclude a CT Image
/// Storage instance.
pub fn instance_kind(sop_class_uid: &str, modality: Option<&str>, image_type: Option<&str>) -> InstanceKind {
    let class = sop_class_uid;
    if class == uids::ENHANCED_CT_IMAGE_STORAGE || class == uids::LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE {
        return InstanceKind::EnhancedCt;
    }
    if class != uids::CT_IMAGE_STORAGE {
        return InstanceKind::OtherSopClass(class.to_owned());
    }
    if let Some(m) = modality.filter(|m| !m.eq_ignore_ascii_case("CT")) {
        return InstanceKind::NotCtModality(m.to_owned());
    }
    let Some(image_type) = image_type else { return InstanceKind::OriginalImage };
    let values: Vec<String> = image_type.split('\\').map(|v| v.trim().to_ascii_uppercase()).collect();
    let has = |v: &str| values.iter().any(|x| x == v);
    if has("LOCALIZER") || has("SCOUT") {
        InstanceKind::Localizer(image_type.to_owned())
    } else if has("ORIGINAL") && has("PRIMARY") {
        InstanceKind::OriginalImage
    } else {
        InstanceKind::Derived(image_type.to_owned())
    }
}

/// Normalised row and column cosines of an Image Orientation (Patient); `None` unless both are
/// near-unit (within 5 %) and near-orthogonal.
pub fn unit_cosines(o: [f64; 6]) -> Option<([f64; 3], [f64; 3])> {
    let row = normalise([o[0], o[1], o[2]])?;
    let col = normalise([o[3], o[4], o[5]])?;
    (dot(row, col).abs() < 0.01).then_some((row, col))
}

/// Whether unit row and column cosines are axial: rows within [`AXIS_TOLERANCE_RAD`] of ±x,
/// columns within it of ±y (an in-plane rotation beyond it, a transposed, coronal, sagittal or
/// oblique plane is not).
pub fn is_axial(row: [f64; 3], col: [f64; 3]) -> bool {
    let near = |v: f64| v.abs() >= AXIS_TOLERANCE_RAD.cos();
    near(row[0]) && near(col[1])
}

/// The median (the mean of the two middle values for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Names of the SOP classes most often found next to CT images (PS3.4 B.5), for reasons.
pub fn sop_class_name(uid: &str) -> &'static str {
    match uid {
        uids::SECONDARY_CAPTURE_IMAGE_STORAGE => "Secondary Capture Image Storage",
        uids::X_RAY_RADIATION_DOSE_SR_STORAGE => "X-Ray Radiation Dose SR Storage",
        uids::ENHANCED_SR_STORAGE => "Enhanced SR Storage",
        uids::COMPREHENSIVE_SR_STORAGE => "Comprehensive SR Storage",
        uids::COMPREHENSIVE3_DSR_STORAGE => "Comprehensive 3D SR Storage",
        uids::BASIC_TEXT_SR_STORAGE => "Basic Text SR Storage",
        uids::GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE => "Grayscale Softcopy Presentation State Storage",
        uids::ENCAPSULATED_PDF_STORAGE => "Encapsulated PDF Storage",
        uids::RAW_DATA_STORAGE => "Raw Data Storage",
        uids::SEGMENTATION_STORAGE => "Segmentation Storage",
        uids::CT_IMAGE_STORAGE_FOR_PROCESSING => "CT Image Storage For Processing",
        uids::MR_IMAGE_STORAGE => "MR Image Storage",
        uids::POSITRON_EMISSION_TOMOGRAPHY_IMAGE_STORAGE => "Positron Emission Tomography Image Storage",
        _ => "other SOP class",
    }
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn normalise(a: [f64; 3]) -> Option<[f64; 3]> {
    let n = dot(a, a).sqrt();
    (n.is_finite() && (n - 1.0).abs() < 0.05).then(|| [a[0] / n, a[1] / n, a[2] / n])
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

    #[test]
    fn kinds() {
        assert_eq!(instance_kind(CT, Some("CT"), Some("ORIGINAL\\PRIMARY\\AXIAL")), InstanceKind::OriginalImage);
        assert_eq!(instance_kind(CT, None, None), InstanceKind::OriginalImage);
        assert!(matches!(
            instance_kind(CT, Some("CT"), Some("ORIGINAL\\PRIMARY\\LOCALIZER")),
            InstanceKind::Localizer(_)
        ));
        assert!(matches!(instance_kind(CT, Some("CT"), Some("DERIVED\\SECONDARY\\MPR")), InstanceKind::Derived(_)));
        assert!(matches!(instance_kind(CT, Some("PT"), None), InstanceKind::NotCtModality(_)));
        assert!(matches!(
            instance_kind("1.2.840.10008.5.1.4.1.1.88.67", Some("SR"), None),
            InstanceKind::OtherSopClass(_)
        ));
        assert!(matches!(instance_kind("1.2.840.10008.5.1.4.1.1.7", Some("CT"), None), InstanceKind::OtherSopClass(_)));
    }

    #[test]
    fn axial_planes() {
        let axial = |o| unit_cosines(o).is_some_and(|(r, c)| is_axial(r, c));
        assert!(axial([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]));
        assert!(axial([-1.0, 0.0, 0.0, 0.0, -1.0, 0.0]));
        assert!(!axial([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]), "coronal");
        assert!(!axial([0.0, 1.0, 0.0, 0.0, 0.0, -1.0]), "sagittal");
        assert!(!axial([0.0, 1.0, 0.0, 1.0, 0.0, 0.0]), "transposed");
        assert!(unit_cosines([2.0, 0.0, 0.0, 0.0, 1.0, 0.0]).is_none());
    }

    #[test]
    fn body_parts() {
        let chest = Takes { body_part: vec!["CHEST".into(), "LUNG".into()], ..Takes::default() };
        assert!(chest.takes_body_part(Some("CHEST")));
        assert!(chest.takes_body_part(Some(" chest ")), "CS padding and case");
        assert!(chest.takes_body_part(Some("Lung")));
        assert!(!chest.takes_body_part(Some("HEAD")));
        assert!(!chest.takes_body_part(Some("CHESTABDOMEN")));
        assert!(chest.takes_body_part(None), "absent is taken by default");
        assert!(chest.takes_body_part(Some("  ")), "empty is absent");
        let strict = Takes { body_part_absent: false, ..chest.clone() };
        assert!(!strict.takes_body_part(None));
        assert!(!strict.takes_body_part(Some("")));
        assert!(strict.takes_body_part(Some("CHEST")));
        assert!(Takes::default().takes_body_part(Some("HEAD")), "an empty list takes any");
        assert_eq!(chest.describe_body_part(), "Body Part Examined CHEST or LUNG (or absent)");
    }

    #[test]
    fn takes_checks() {
        assert!(Takes::default().check().is_ok());
        let mr = Takes { modality: vec!["MR".into()], ..Takes::default() };
        assert!(mr.check().is_err_and(|e| e.contains("CT images only")));
        let blank = Takes { site: vec![" ".into()], ..Takes::default() };
        assert!(blank.check().is_err_and(|e| e.contains("takes.site")));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[8.0, 16.0, 8.0, 8.0]), Some(8.0));
    }
}
