//! The first read as DICOM Structured Reports: Comprehensive 3D SR Storage
//! (1.2.840.10008.5.1.4.1.1.88.34, PS3.3 A.35.13), content tree PS3.16 TID 1500 "Measurement
//! Report", Explicit VR Little Endian.
//!
//! Two documents, each in its own series (one kind of object and one document per series: two
//! SRs in one series show only the last in common viewers, and SR next to SC confuses them):
//!
//! - [`build_sr`]: the report a viewer draws. Its Imaging Measurements hold one TID 1410 "Planar
//!   ROI Measurements and Qualitative Evaluations" group per lung with opacity, on that lung's
//!   key slice (largest opacity area): a closed POLYLINE outlining the largest opacity component
//!   on that slice, in source image pixel coordinates, SELECTED FROM the source CT image, with
//!   area, mean attenuation, the lung's involvement and opacity volume. Area and mean attenuation
//!   are the findings' key slice values (all opacity of that lung on that slice); on a slice
//!   with several opacity components the outline covers only the largest. Its Qualitative
//!   Evaluations hold the SFR extent class, the CT severity score, the involvement (total and per
//!   lung), pleural effusion per side and the dense dependent region (when the pleural cavity was
//!   assessed), each dense focal lesion, the suggested RSNA category with its basis, and the
//!   method and its limits. Effusions, dense dependent regions and focal lesions are TEXT items
//!   (concept: the finding, value: its display text from `firstread_findings::vocabulary`) with
//!   laterality or finding site as HAS CONCEPT MOD and their measurements as HAS PROPERTIES NUM
//!   children: no measurement group without spatial coordinates enters this document.
//! - [`build_volumetric_sr`]: TID 1411 "Volumetric ROI Measurements and Qualitative Evaluations"
//!   groups, one per lung, one per zone (thirds) and one per pleural effusion segment the SEG
//!   holds, each referencing a segment of the result SEG (segment numbers are the manifest's output
//!   channels + 1). A measurement group without spatial coordinates makes OHIF 3.13's SR viewport
//!   fail, and nothing of that SR is shown;
//!   keeping the volumetric groups in their own document keeps [`build_sr`] displayable, and a
//!   PACS or a reader that understands TID 1411 still gets the per-segment volumes. Its title is
//!   (18748-4, LN, "Diagnostic imaging report"), another CID 7021 title, because OHIF reads the
//!   measurement groups of every (126000, DCM) report it opens and crashes on TID 1411 groups
//!   (verified in the browser: `tests/browser/ohif.mjs`).
//!
//! OHIF specifics of [`build_sr`] (see `shared/cases/ohif-dicomweb-contract.md`): the root concept
//! is (126000, DCM, "Imaging Measurement Report") with both the Image Library and the Imaging
//! Measurements containers present (the latter even when empty); every direct child of a
//! measurement group has a Concept Name; the group's first UIDREF is its Tracking Unique
//! Identifier; the Tracking Identifier names the Cornerstone tool
//! ([`PLANAR_TRACKING_IDENTIFIER`]) and the area NUM (the group's first NUM) carries the polyline
//! again as its INFERRED FROM SCOORD, so OHIF can also load the ROI into its measurement panel;
//! the group-level (111030, DCM, "Image Region") SCOORD is what OHIF draws (read-only).
//!
//! Codes without a standard concept (involvement, severity score, SFR class, suggested RSNA
//! category, zones, and the vocabulary's private codes) use the private coding scheme
//! [`LOCAL_SCHEME`], declared in the Coding Scheme Identification Sequence (0008,0110).
//!
//! Numeric values are written as DS with fixed decimals: areas, volumes and percentages 2,
//! attenuation (HU) and lengths (mm) 1, scores 0.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileDicomObject, InMemDicomObject};
use firstread_findings::vocabulary::{self, Code, Term, Unit};
use firstread_findings::{Effusion, ExtentClass, Involvement, KeySlice, Level, Pattern, Side};

use crate::contour::{outline_largest_component, Outline};
use crate::dataset::{new_instance, put_seq, put_str, truncate, SeriesHeader};
use crate::{ReportError, ResultInput};

pub(crate) mod measures;

/// SOP Class UID of Comprehensive 3D SR Storage (PS3.4 B.5).
pub const COMPREHENSIVE_3D_SR_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.88.34";
/// SOP Class UID of Segmentation Storage, referenced by the volumetric groups.
pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";
/// Explicit VR Little Endian, the transfer syntax written.
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
/// Series Number of the displayable SR ([`build_sr`]).
pub const SR_SERIES_NUMBER: i32 = 9001;
/// Series Number of the volumetric SR ([`build_volumetric_sr`]).
pub const VOLUMETRIC_SR_SERIES_NUMBER: i32 = 9004;
/// Tracking Identifier (112039) of the planar groups: the Cornerstone3D tool OHIF maps a closed
/// polyline to, so OHIF can load the ROI into its measurement panel.
pub const PLANAR_TRACKING_IDENTIFIER: &str = "Cornerstone3DTools@^0.1.0:PlanarFreehandROI";
/// Coding Scheme Designator of firstread's private codes ("99" prefix: private or local, PS3.3 8.2).
pub const LOCAL_SCHEME: &str = vocabulary::LOCAL_SCHEME;
/// Most points of an outline, the closing repeat included.
pub const MAX_OUTLINE_POINTS: usize = 200;
/// Manufacturer (0008,0070) and Device Observer Manufacturer.
pub const MANUFACTURER: &str = "firstread";

/// `uids.other(...)` keys of the volumetric SR's Series and SOP Instance UIDs.
pub const VOLUMETRIC_SERIES_KEY: &str = "volumetric-sr-series";
/// See [`VOLUMETRIC_SERIES_KEY`].
pub const VOLUMETRIC_INSTANCE_KEY: &str = "volumetric-sr-instance";

/// A coded concept (PS3.3 Table 8.8-1 Code Sequence Macro).
type Cd = (&'static str, &'static str, &'static str);

/// A vocabulary code as a [`Cd`].
const fn cd(c: Code) -> Cd {
    (c.value, c.scheme, c.meaning)
}

/// A vocabulary term's concept as a [`Cd`].
const fn term(t: Term) -> Cd {
    cd(t.code)
}

/// A vocabulary unit as its UCUM [`Cd`].
const fn ucum(u: Unit) -> Cd {
    (u.ucum, "UCUM", u.meaning)
}

// --- DCM / SCT / UCUM concepts (PS3.16) ---
const IMAGING_MEASUREMENT_REPORT: Cd = ("126000", "DCM", "Imaging Measurement Report");
/// The volumetric SR's document title, also from CID 7021 "Measurement Report Document Titles":
/// OHIF 3.13 hydrates the measurement groups only of (126000, DCM) reports, and fails on groups
/// without spatial coordinates (TID 1411), so this title keeps the viewer from reading them.
const DIAGNOSTIC_IMAGING_REPORT: Cd = ("18748-4", "LN", "Diagnostic imaging report");
const LANGUAGE: Cd = ("121049", "DCM", "Language of Content Item and Descendants");
const COUNTRY_OF_LANGUAGE: Cd = ("121046", "DCM", "Country of Language");
const ENGLISH: Cd = ("en", "RFC5646", "English");
const UNITED_STATES: Cd = ("US", "ISO3166_1", "United States of America");
const OBSERVER_TYPE: Cd = ("121005", "DCM", "Observer Type");
const DEVICE: Cd = ("121007", "DCM", "Device");
const DEVICE_OBSERVER_UID: Cd = ("121012", "DCM", "Device Observer UID");
const DEVICE_OBSERVER_NAME: Cd = ("121013", "DCM", "Device Observer Name");
const DEVICE_OBSERVER_MANUFACTURER: Cd = ("121014", "DCM", "Device Observer Manufacturer");
const DEVICE_OBSERVER_MODEL_NAME: Cd = ("121015", "DCM", "Device Observer Model Name");
const PROCEDURE_REPORTED: Cd = ("121058", "DCM", "Procedure reported");
/// SNOMED CT 169069000 "Computed tomography of chest (procedure)".
const CT_OF_CHEST: Cd = ("169069000", "SCT", "CT of chest");
const IMAGE_LIBRARY: Cd = ("111028", "DCM", "Image Library");
const IMAGE_LIBRARY_GROUP: Cd = ("126200", "DCM", "Image Library Group");
const MODALITY: Cd = ("121139", "DCM", "Modality");
const COMPUTED_TOMOGRAPHY: Cd = ("CT", "DCM", "Computed Tomography");
const TARGET_REGION: Cd = ("123014", "DCM", "Target Region");
const CHEST: Cd = ("51185008", "SCT", "Chest");
const FRAME_OF_REFERENCE_UID: Cd = ("112227", "DCM", "Frame of Reference UID");
const PIXEL_DATA_ROWS: Cd = ("110910", "DCM", "Pixel Data Rows");
const PIXEL_DATA_COLUMNS: Cd = ("110911", "DCM", "Pixel Data Columns");
const HORIZONTAL_PIXEL_SPACING: Cd = ("111026", "DCM", "Horizontal Pixel Spacing");
const VERTICAL_PIXEL_SPACING: Cd = ("111066", "DCM", "Vertical Pixel Spacing");
const IMAGING_MEASUREMENTS: Cd = ("126010", "DCM", "Imaging Measurements");
const MEASUREMENT_GROUP: Cd = ("125007", "DCM", "Measurement Group");
const QUALITATIVE_EVALUATIONS: Cd = ("C0034375", "UMLS", "Qualitative Evaluations");
const TRACKING_IDENTIFIER: Cd = ("112039", "DCM", "Tracking Identifier");
const TRACKING_UID: Cd = ("112040", "DCM", "Tracking Unique Identifier");
const FINDING: Cd = ("121071", "DCM", "Finding");
const FINDING_SITE: Cd = ("363698007", "SCT", "Finding Site");
const LATERALITY: Cd = ("272741003", "SCT", "Laterality");
const LEFT: Cd = ("7771000", "SCT", "Left");
const RIGHT: Cd = ("24028007", "SCT", "Right");
const RIGHT_AND_LEFT: Cd = ("51440002", "SCT", "Right and left");
const LUNG: Cd = ("39607008", "SCT", "Lung");
const TOPOGRAPHICAL_MODIFIER: Cd = ("106233006", "SCT", "Topographical modifier");
const IMAGE_REGION: Cd = ("111030", "DCM", "Image Region");
const REFERENCED_SEGMENT: Cd = ("121191", "DCM", "Referenced Segment");
const SOURCE_SERIES_FOR_SEGMENTATION: Cd = ("121232", "DCM", "Source series for segmentation");
const AREA: Cd = ("42798000", "SCT", "Area");
const VOLUME: Cd = term(vocabulary::VOLUME);
const ATTENUATION_COEFFICIENT: Cd = term(vocabulary::MEAN_ATTENUATION);
const CRANIOCAUDAL_EXTENT: Cd = term(vocabulary::CRANIOCAUDAL_EXTENT);
const EQUIVALENT_DIAMETER: Cd = term(vocabulary::EQUIVALENT_DIAMETER);
const MAX_INPLANE_DIAMETER: Cd = term(vocabulary::MAX_INPLANE_DIAMETER);
const PLEURAL_EFFUSION: Cd = term(vocabulary::PLEURAL_EFFUSION);
const INDETERMINATE_DENSE: Cd = term(vocabulary::INDETERMINATE_DENSE);
const CAUTION: Cd = term(vocabulary::CAUTION);
const FOCAL_OPACITY: Cd = term(vocabulary::FOCAL_OPACITY);
const DERIVATION: Cd = ("121401", "DCM", "Derivation");
const MEAN: Cd = ("373098007", "SCT", "Mean");
const ALGORITHM_NAME: Cd = ("111001", "DCM", "Algorithm Name");
const ALGORITHM_VERSION: Cd = ("111003", "DCM", "Algorithm Version");
const MM2: Cd = ("mm2", "UCUM", "square millimeter");
const MM: Cd = ucum(vocabulary::MM);
const ML: Cd = ucum(vocabulary::ML);
const PERCENT: Cd = ucum(vocabulary::PERCENT);
const HU: Cd = ucum(vocabulary::HU);
const SCORE: Cd = ucum(vocabulary::SCORE);
const PIXELS: Cd = ("{pixels}", "UCUM", "pixels");

// --- firstread's private codes (LOCAL_SCHEME) ---
const INVOLVEMENT: Cd = term(vocabulary::INVOLVEMENT);
const OPACITY_VOLUME: Cd = term(vocabulary::OPACITY_VOLUME);
const SEVERITY_SCORE: Cd = term(vocabulary::SEVERITY_SCORE);
const ZONE_SCORE: Cd = term(vocabulary::ZONE_SCORE);
const EXTENT_CLASS: Cd = term(vocabulary::EXTENT_CLASS);
const POSSIBLE_EXTENT_CLASS: Cd = term(vocabulary::POSSIBLE_EXTENT_CLASS);
const UNCERTAINTY: Cd = term(vocabulary::UNCERTAINTY);
const RSNA_SUGGESTION: Cd = term(vocabulary::RSNA_SUGGESTION);
const SUGGESTION_BASIS: Cd = ("SUGGEST-BASIS", LOCAL_SCHEME, "Basis of the suggested category");
const METHOD_AND_LIMITS: Cd = ("METHOD-LIMITS", LOCAL_SCHEME, "Method and limits");

const DCMR_UID: &str = "1.2.840.10008.8.1.1";

/// Errors of this module.
fn err(what: &'static str, message: impl Into<String>) -> ReportError {
    ReportError::Write { what, message: message.into() }
}

/// Builds the displayable SR (module doc): TID 1500 with planar TID 1410 groups on the key
/// slices, qualitative evaluations, and the method and its limits. Series [`SR_SERIES_NUMBER`],
/// UIDs `uids.sr_series` / `uids.sr_instance`; Predecessor Documents Sequence when
/// `input.predecessor_sr` is set.
///
/// # Errors
/// [`ReportError::Write`] when the masks do not match the volume, a channel named by the
/// manifest is missing, a key slice is outside the volume or has no opacity in its lung, a
/// measurement is not finite, or the content date/time is malformed.
pub fn build_sr(input: &ResultInput) -> Result<FileDicomObject<InMemDicomObject>, ReportError> {
    const WHAT: &str = "SR";
    let ctx = Context::new(input, WHAT)?;
    let Some(findings) = input.findings else { return measures::build_sr(&ctx) };
    let mut groups = Vec::new();
    for key in &findings.key_slices {
        groups.push(ctx.planar_group(key)?);
    }
    let mut content = ctx.preamble();
    content.push(ctx.image_library(true));
    content.push(Item::container(CONTAINS, IMAGING_MEASUREMENTS, None).with(groups));
    content.push(ctx.qualitative_evaluations()?);
    let references = vec![(input.volume.series_instance_uid.clone(), ctx.ct_references())];
    let predecessor = input.predecessor_sr.clone();
    let description = format!("firstread first read ({} {})", input.manifest.name, input.manifest.version);
    ctx.document(Document {
        title: IMAGING_MEASUREMENT_REPORT,
        series_uid: &input.uids.sr_series,
        instance_uid: &input.uids.sr_instance,
        series_number: SR_SERIES_NUMBER,
        description: &description,
        content,
        references,
        predecessor,
    })
}

/// Builds the volumetric SR (module doc): TID 1500 with one TID 1411 group per lung and per zone,
/// each referencing its lung's segment of the result SEG (`uids.seg_instance`), and one per
/// pleural effusion whose segment the SEG holds (the manifest names the
/// `vocabulary::roles::pleural_effusion` output and the segmentation has its channel). Series
/// [`VOLUMETRIC_SR_SERIES_NUMBER`], UIDs `uids.other(`[`VOLUMETRIC_SERIES_KEY`]`)` /
/// `uids.other(`[`VOLUMETRIC_INSTANCE_KEY`]`)`. No Predecessor Documents Sequence: the input
/// names only the predecessor of the displayable SR.
///
/// # Errors
/// As [`build_sr`].
pub fn build_volumetric_sr(input: &ResultInput) -> Result<FileDicomObject<InMemDicomObject>, ReportError> {
    const WHAT: &str = "volumetric SR";
    let ctx = Context::new(input, WHAT)?;
    let Some(f) = input.findings else { return measures::build_volumetric_sr(&ctx) };
    let mut groups = Vec::new();
    for lung in &f.lungs {
        groups.push(ctx.volumetric_group(lung.side, None, &lung.involvement, lung.opacity_mean_hu, None)?);
    }
    for zone in &f.zones {
        groups.push(ctx.volumetric_group(zone.side, Some(zone.level), &zone.involvement, None, Some(zone.score))?);
    }
    for effusion in &f.effusions {
        if let Some(group) = ctx.effusion_group(effusion)? {
            groups.push(group);
        }
    }
    ctx.volumetric_document(groups, "firstread volumetric measurements")
}

/// Series and SOP Instance UID of the volumetric SR.
pub fn volumetric_sr_uids(uids: &crate::ResultUids) -> (String, String) {
    (uids.other(VOLUMETRIC_SERIES_KEY), uids.other(VOLUMETRIC_INSTANCE_KEY))
}

/// Device Observer UID (121012): UUID v5 of the device identity (firstread, model, version)
/// under 2.25, the same for every report of that model version.
pub fn device_observer_uid(model: &str, version: &str) -> String {
    let u = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("firstread|device|{model}|{version}").as_bytes());
    format!("2.25.{}", u.as_u128())
}

/// `(row, column)` in source image coordinates (PS3.3 C.18.6.1.1: (0, 0) is the top left corner
/// of the top left pixel) of the canonical continuous coordinates `(r, c)` of the same slice:
/// the continuous form of [`firstread_volume::Volume::source_pixel`].
pub fn source_point(volume: &firstread_volume::Volume, r: f64, c: f64) -> (f64, f64) {
    let (rows, cols) = (volume.shape[1] as f64, volume.shape[2] as f64);
    (if volume.flip_rows { rows - r } else { r }, if volume.flip_cols { cols - c } else { c })
}

// ---------------------------------------------------------------------------------------------
// Content items (PS3.3 C.17.3 SR Document Content Module)

const CONTAINS: &str = "CONTAINS";
const HAS_OBS_CONTEXT: &str = "HAS OBS CONTEXT";
const HAS_ACQ_CONTEXT: &str = "HAS ACQ CONTEXT";
const HAS_CONCEPT_MOD: &str = "HAS CONCEPT MOD";
const INFERRED_FROM: &str = "INFERRED FROM";
const HAS_PROPERTIES: &str = "HAS PROPERTIES";
const SELECTED_FROM: &str = "SELECTED FROM";

/// The value of a content item.
enum Value {
    Container { template: Option<&'static str> },
    Text(String),
    Code(Cd2),
    Num { value: String, unit: Cd },
    UidRef(String),
    Image { class: String, instance: String, segment: Option<u16> },
    Scoord { graphic_data: Vec<f32> },
}

/// A code whose value or meaning is not static (from the manifest).
#[derive(Clone)]
struct Cd2 {
    value: String,
    scheme: String,
    meaning: String,
}

impl From<Cd> for Cd2 {
    fn from((value, scheme, meaning): Cd) -> Self {
        Cd2 { value: value.to_owned(), scheme: scheme.to_owned(), meaning: meaning.to_owned() }
    }
}

/// A content item and its children (by value).
struct Item {
    relationship: &'static str,
    name: Option<Cd2>,
    value: Value,
    children: Vec<Item>,
}

impl Item {
    fn new(relationship: &'static str, name: Option<Cd2>, value: Value) -> Self {
        Item { relationship, name, value, children: Vec::new() }
    }

    fn container(relationship: &'static str, name: Cd, template: Option<&'static str>) -> Self {
        Item::new(relationship, Some(name.into()), Value::Container { template })
    }

    fn text(relationship: &'static str, name: Cd, text: impl Into<String>) -> Self {
        Item::new(relationship, Some(name.into()), Value::Text(text.into()))
    }

    fn code(relationship: &'static str, name: Cd, code: impl Into<Cd2>) -> Self {
        Item::new(relationship, Some(name.into()), Value::Code(code.into()))
    }

    fn uidref(relationship: &'static str, name: Cd, uid: impl Into<String>) -> Self {
        Item::new(relationship, Some(name.into()), Value::UidRef(uid.into()))
    }

    /// NUM with `decimals` fixed decimals.
    fn num(what: &'static str, name: Cd, value: f64, decimals: usize, unit: Cd) -> Result<Self, ReportError> {
        Ok(Item::new(CONTAINS, Some(name.into()), Value::Num { value: format_ds(what, value, decimals)?, unit }))
    }

    fn image(relationship: &'static str, name: Option<Cd>, class: &str, instance: &str, segment: Option<u16>) -> Self {
        let value = Value::Image { class: class.to_owned(), instance: instance.to_owned(), segment };
        Item::new(relationship, name.map(Cd2::from), value)
    }

    fn with(mut self, children: Vec<Item>) -> Self {
        self.children.extend(children);
        self
    }

    fn child(mut self, child: Item) -> Self {
        self.children.push(child);
        self
    }

    fn relationship(mut self, relationship: &'static str) -> Self {
        self.relationship = relationship;
        self
    }

    /// The item's attributes (without Relationship Type for the root).
    fn write(&self, obj: &mut InMemDicomObject, root: bool) {
        if !root {
            put_str(obj, tags::RELATIONSHIP_TYPE, VR::CS, self.relationship);
        }
        let value_type = match &self.value {
            Value::Container { .. } => "CONTAINER",
            Value::Text(_) => "TEXT",
            Value::Code(_) => "CODE",
            Value::Num { .. } => "NUM",
            Value::UidRef(_) => "UIDREF",
            Value::Image { .. } => "IMAGE",
            Value::Scoord { .. } => "SCOORD",
        };
        put_str(obj, tags::VALUE_TYPE, VR::CS, value_type);
        if let Some(name) = &self.name {
            put_seq(obj, tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code_dataset(name)]);
        }
        match &self.value {
            Value::Container { template } => {
                put_str(obj, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
                if let Some(id) = template {
                    let mut t = InMemDicomObject::new_empty();
                    put_str(&mut t, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
                    put_str(&mut t, tags::MAPPING_RESOURCE_UID, VR::UI, DCMR_UID);
                    put_str(&mut t, tags::TEMPLATE_IDENTIFIER, VR::CS, id);
                    put_seq(obj, tags::CONTENT_TEMPLATE_SEQUENCE, vec![t]);
                }
            }
            Value::Text(text) => put_str(obj, tags::TEXT_VALUE, VR::UT, text),
            Value::Code(code) => put_seq(obj, tags::CONCEPT_CODE_SEQUENCE, vec![code_dataset(code)]),
            Value::Num { value, unit } => {
                let mut m = InMemDicomObject::new_empty();
                put_seq(&mut m, tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![code_dataset(&(*unit).into())]);
                put_str(&mut m, tags::NUMERIC_VALUE, VR::DS, value);
                put_seq(obj, tags::MEASURED_VALUE_SEQUENCE, vec![m]);
            }
            Value::UidRef(uid) => put_str(obj, tags::UID, VR::UI, uid),
            Value::Image { class, instance, segment } => {
                put_seq(obj, tags::REFERENCED_SOP_SEQUENCE, vec![sop_reference(class, instance, *segment)]);
            }
            Value::Scoord { graphic_data } => {
                let data = dicom_core::smallvec::SmallVec::from_vec(graphic_data.clone());
                obj.put(DataElement::new(tags::GRAPHIC_DATA, VR::FL, PrimitiveValue::F32(data)));
                put_str(obj, tags::GRAPHIC_TYPE, VR::CS, "POLYLINE");
            }
        }
        if !self.children.is_empty() {
            let items = self
                .children
                .iter()
                .map(|c| {
                    let mut o = InMemDicomObject::new_empty();
                    c.write(&mut o, false);
                    o
                })
                .collect();
            put_seq(obj, tags::CONTENT_SEQUENCE, items);
        }
    }
}

fn code_dataset(code: &Cd2) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    if code.value.len() > 16 {
        put_str(&mut o, tags::LONG_CODE_VALUE, VR::UC, &code.value);
    } else {
        put_str(&mut o, tags::CODE_VALUE, VR::SH, &code.value);
    }
    put_str(&mut o, tags::CODING_SCHEME_DESIGNATOR, VR::SH, &code.scheme);
    put_str(&mut o, tags::CODE_MEANING, VR::LO, &truncate(&code.meaning, 64));
    o
}

fn sop_reference(class: &str, instance: &str, segment: Option<u16>) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    put_str(&mut o, tags::REFERENCED_SOP_CLASS_UID, VR::UI, class);
    put_str(&mut o, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance);
    if let Some(n) = segment {
        o.put(DataElement::new(tags::REFERENCED_SEGMENT_NUMBER, VR::US, PrimitiveValue::from(n)));
    }
    o
}

/// A DS value with `decimals` fixed decimals (at most 16 characters; never "-0").
fn format_ds(what: &'static str, value: f64, decimals: usize) -> Result<String, ReportError> {
    if !value.is_finite() {
        return Err(err(what, format!("measurement {value} is not a finite number")));
    }
    for d in (0..=decimals).rev() {
        let mut s = format!("{value:.d$}");
        if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
            s = s.trim_start_matches('-').to_owned();
        }
        if s.len() <= 16 {
            return Ok(s);
        }
    }
    Err(err(what, format!("measurement {value} does not fit a DS value")))
}

// ---------------------------------------------------------------------------------------------
// Document assembly

/// What differs between the two documents.
struct Document<'a> {
    /// The root container's concept (CID 7021).
    title: Cd,
    series_uid: &'a str,
    instance_uid: &'a str,
    series_number: i32,
    description: &'a str,
    content: Vec<Item>,
    /// (Series Instance UID, [(SOP Class UID, SOP Instance UID)]) of every referenced instance.
    references: Vec<(String, Vec<(String, String)>)>,
    predecessor: Option<(String, String, String)>,
}

/// The checked input and what both documents share.
struct Context<'a> {
    input: &'a ResultInput<'a>,
    what: &'static str,
    study_uid: String,
    plane: usize,
}

impl<'a> Context<'a> {
    fn new(input: &'a ResultInput<'a>, what: &'static str) -> Result<Self, ReportError> {
        let v = input.volume;
        let seg = input.segmentation;
        let n: usize = v.shape.iter().product();
        if seg.shape != v.shape || seg.channels.iter().any(|c| c.len() != n) || v.hu.len() != n {
            return Err(err(what, "masks and volume differ in size"));
        }
        if v.slices.len() != v.shape[0] {
            return Err(err(what, "the volume does not list one source image per slice"));
        }
        let roles: &[&str] = if input.findings.is_some() { &["left_lung", "right_lung", "lung_opacity"] } else { &[] };
        for role in roles {
            match input.manifest.channel(role) {
                Some(c) if c < seg.channels.len() => {}
                _ => return Err(err(what, format!("the model output has no {role} channel"))),
            }
        }
        let date_ok = input.content_date.len() == 8 && input.content_date.bytes().all(|b| b.is_ascii_digit());
        let t = &input.content_time;
        let time_ok = t.len() >= 6
            && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && t[..6].bytes().all(|b| b.is_ascii_digit());
        if !date_ok || !time_ok {
            return Err(err(
                what,
                format!("content date/time {:?} {:?} are not DA/TM", input.content_date, input.content_time),
            ));
        }
        let study_uid = if input.source.study_instance_uid.is_empty() {
            v.study_instance_uid.clone()
        } else {
            input.source.study_instance_uid.clone()
        };
        Ok(Context { input, what, study_uid, plane: v.shape[1] * v.shape[2] })
    }

    /// The findings of the model's extension.
    fn findings(&self) -> Result<&'a firstread_findings::Findings, ReportError> {
        self.input.findings.ok_or_else(|| err(self.what, "the result has no findings"))
    }

    /// The mask of a manifest role (checked in `new`).
    fn channel(&self, role: &str) -> &[u8] {
        let c = self.input.manifest.channel(role).unwrap_or(0);
        self.input.segmentation.channels.get(c).map(Vec::as_slice).unwrap_or(&[])
    }

    fn lung_role(side: Side) -> &'static str {
        match side {
            Side::Left => "left_lung",
            Side::Right => "right_lung",
        }
    }

    /// The manifest's Segmented Property Type of a role, and its segment number (channel + 1).
    fn segment(&self, role: &str) -> Result<(Cd2, u16), ReportError> {
        let m = self.input.manifest;
        let out = m
            .channel(role)
            .and_then(|c| m.outputs.get(c))
            .ok_or_else(|| err(self.what, format!("the manifest has no {role} output")))?;
        let code =
            Cd2 { value: out.type_value.clone(), scheme: out.type_scheme.clone(), meaning: out.type_meaning.clone() };
        let number = u16::try_from(out.channel + 1).map_err(|_| err(self.what, "too many segments"))?;
        Ok((code, number))
    }

    /// TID 1500 rows 2-4: language (TID 1204), observer context (TID 1001/1002/1004 device),
    /// procedure reported.
    fn preamble(&self) -> Vec<Item> {
        let m = self.input.manifest;
        vec![
            Item::code(HAS_CONCEPT_MOD, LANGUAGE, ENGLISH).child(Item::code(
                HAS_CONCEPT_MOD,
                COUNTRY_OF_LANGUAGE,
                UNITED_STATES,
            )),
            Item::code(HAS_OBS_CONTEXT, OBSERVER_TYPE, DEVICE),
            Item::uidref(HAS_OBS_CONTEXT, DEVICE_OBSERVER_UID, device_observer_uid(&m.name, &m.version)),
            Item::text(HAS_OBS_CONTEXT, DEVICE_OBSERVER_NAME, "firstread"),
            Item::text(HAS_OBS_CONTEXT, DEVICE_OBSERVER_MANUFACTURER, MANUFACTURER),
            Item::text(HAS_OBS_CONTEXT, DEVICE_OBSERVER_MODEL_NAME, format!("{} {}", m.name, m.version)),
            Item::code(HAS_CONCEPT_MOD, PROCEDURE_REPORTED, CT_OF_CHEST),
        ]
    }

    /// TID 1600 Image Library: one group (TID 1600 row 2) with the descriptors common to the
    /// series (TID 1602/1604: modality, target region, frame of reference, matrix, pixel
    /// spacing) and one IMAGE entry (TID 1601) per analysed source image, in slice order.
    /// TID 1600 Image Library: with `entries`, one group (TID 1601) listing every source image;
    /// without, the empty container (its groups are optional). The volumetric SR has none:
    /// Image Library entries have no Concept Name, and OHIF 3.13 fails to render a non-126000
    /// report holding an item without one (its references are in the Evidence Sequence).
    fn image_library(&self, entries: bool) -> Item {
        if !entries {
            return Item::container(CONTAINS, IMAGE_LIBRARY, None);
        }
        let v = self.input.volume;
        let mut group = Item::container(CONTAINS, IMAGE_LIBRARY_GROUP, None);
        group.children.push(Item::code(HAS_ACQ_CONTEXT, MODALITY, COMPUTED_TOMOGRAPHY));
        group.children.push(Item::code(HAS_ACQ_CONTEXT, TARGET_REGION, CHEST));
        if let Some(frame) = v.frame_of_reference_uid.as_ref().filter(|f| !f.is_empty()) {
            group.children.push(Item::uidref(HAS_ACQ_CONTEXT, FRAME_OF_REFERENCE_UID, frame.clone()));
        }
        // descriptors of finite, plausible values only (never an error: they are descriptive)
        let nums = [
            (PIXEL_DATA_ROWS, v.shape[1] as f64, 0, PIXELS),
            (PIXEL_DATA_COLUMNS, v.shape[2] as f64, 0, PIXELS),
            (HORIZONTAL_PIXEL_SPACING, v.spacing_mm[2], 4, MM),
            (VERTICAL_PIXEL_SPACING, v.spacing_mm[1], 4, MM),
        ];
        for (name, value, decimals, unit) in nums {
            if let Ok(n) = Item::num(self.what, name, value, decimals, unit) {
                group.children.push(n.relationship(HAS_ACQ_CONTEXT));
            }
        }
        for s in &v.slices {
            group.children.push(Item::image(CONTAINS, None, &s.sop_class_uid, &s.sop_instance_uid, None));
        }
        Item::container(CONTAINS, IMAGE_LIBRARY, None).child(group)
    }

    /// (SOP Class UID, SOP Instance UID) of every source image, in slice order.
    fn ct_references(&self) -> Vec<(String, String)> {
        self.input.volume.slices.iter().map(|s| (s.sop_class_uid.clone(), s.sop_instance_uid.clone())).collect()
    }

    /// Finding Site (TID 1419 rows 9-11) of a lung, optionally one of its thirds.
    fn finding_site(&self, side: Side, level: Option<Level>) -> Result<Item, ReportError> {
        let (lung, _) = self.segment(Self::lung_role(side))?;
        let mut site = Item::code(HAS_CONCEPT_MOD, FINDING_SITE, lung).child(laterality(side));
        if let Some(level) = level {
            site = site.child(Item::code(HAS_CONCEPT_MOD, TOPOGRAPHICAL_MODIFIER, zone_code(level)));
        }
        Ok(site)
    }

    /// TID 4019 Algorithm Identification, as children of a measurement (TID 1419).
    fn algorithm(&self) -> Vec<Item> {
        let m = self.input.manifest;
        vec![
            Item::text(HAS_CONCEPT_MOD, ALGORITHM_NAME, m.name.clone()),
            Item::text(HAS_CONCEPT_MOD, ALGORITHM_VERSION, m.version.clone()),
        ]
    }

    /// The outline of the largest opacity component of `key`'s lung on its slice, in source image
    /// coordinates: GraphicData (column, row) pairs.
    fn key_outline(&self, key: &KeySlice) -> Result<(Outline, Vec<f32>), ReportError> {
        let v = self.input.volume;
        let (rows, cols) = (v.shape[1], v.shape[2]);
        if key.slice >= v.shape[0] {
            return Err(err(self.what, format!("key slice {} outside the volume", key.slice)));
        }
        let range = key.slice * self.plane..(key.slice + 1) * self.plane;
        let lung = &self.channel(Self::lung_role(key.side))[range.clone()];
        let opacity = &self.channel("lung_opacity")[range];
        let mask: Vec<u8> = lung.iter().zip(opacity).map(|(&l, &o)| u8::from(l != 0 && o != 0)).collect();
        let outline = outline_largest_component(&mask, rows, cols, MAX_OUTLINE_POINTS)
            .ok_or_else(|| err(self.what, format!("key slice {} has no opacity in its lung", key.slice)))?;
        let mut data = Vec::with_capacity(outline.points.len() * 2);
        for &(r, c) in &outline.points {
            let (row, col) = source_point(v, r, c);
            data.push(col as f32);
            data.push(row as f32);
        }
        Ok((outline, data))
    }

    /// SCOORD POLYLINE SELECTED FROM the key slice's source image.
    fn scoord(&self, relationship: &'static str, name: Option<Cd>, slice: usize, data: &[f32]) -> Item {
        let s = &self.input.volume.slices[slice];
        Item::new(relationship, name.map(Cd2::from), Value::Scoord { graphic_data: data.to_vec() }).child(Item::image(
            SELECTED_FROM,
            None,
            &s.sop_class_uid,
            &s.sop_instance_uid,
            None,
        ))
    }

    /// TID 1410 Planar ROI Measurements and Qualitative Evaluations on a key slice.
    fn planar_group(&self, key: &KeySlice) -> Result<Item, ReportError> {
        let f = self.findings()?;
        let lung = f
            .lungs
            .iter()
            .find(|l| l.side == key.side)
            .ok_or_else(|| err(self.what, "key slice of a lung without findings"))?;
        let (_, data) = self.key_outline(key)?;
        let (finding, _) = self.segment("lung_opacity")?;
        let side = side_key(key.side);
        let polyline = || self.scoord(INFERRED_FROM, None, key.slice, &data);
        let area = Item::num(self.what, AREA, key.opacity_area_mm2, 2, MM2)?.child(polyline()).with(self.algorithm());
        let mean = Item::num(self.what, ATTENUATION_COEFFICIENT, key.opacity_mean_hu, 1, HU)?
            .child(Item::code(HAS_CONCEPT_MOD, DERIVATION, MEAN))
            .child(polyline())
            .with(self.algorithm());
        let involvement =
            Item::num(self.what, INVOLVEMENT, lung.involvement.involvement_pct, 2, PERCENT)?.with(self.algorithm());
        let volume = Item::num(self.what, OPACITY_VOLUME, lung.involvement.opacity_ml, 2, ML)?.with(self.algorithm());
        Ok(Item::container(CONTAINS, MEASUREMENT_GROUP, Some("1410")).with(vec![
            Item::text(HAS_OBS_CONTEXT, TRACKING_IDENTIFIER, PLANAR_TRACKING_IDENTIFIER),
            Item::uidref(HAS_OBS_CONTEXT, TRACKING_UID, self.input.uids.other(&format!("sr-tracking-{side}"))),
            Item::code(CONTAINS, FINDING, finding),
            self.scoord(CONTAINS, Some(IMAGE_REGION), key.slice, &data),
            self.finding_site(key.side, None)?,
            area,
            mean,
            involvement,
            volume,
        ]))
    }

    /// TID 1500 row 12 Qualitative Evaluations (extended with NUM rows for the scores and the
    /// involvement, TID 1500 being extensible).
    fn qualitative_evaluations(&self) -> Result<Item, ReportError> {
        let f = self.findings()?;
        let what = self.what;
        let mut items = vec![Item::code(CONTAINS, EXTENT_CLASS, extent_code(f.extent_class))];
        // a class the method's error allows is said, never rounded away
        for class in f.uncertainty.other_classes(f.extent_class) {
            items.push(Item::code(CONTAINS, POSSIBLE_EXTENT_CLASS, extent_code(class)));
        }
        items.extend([
            Item::num(what, SEVERITY_SCORE, f64::from(f.severity_score), 0, SCORE)?,
            Item::num(what, INVOLVEMENT, f.total.involvement_pct, 2, PERCENT)?.child(
                Item::code(HAS_CONCEPT_MOD, FINDING_SITE, LUNG).child(Item::code(
                    HAS_CONCEPT_MOD,
                    LATERALITY,
                    RIGHT_AND_LEFT,
                )),
            ),
            Item::text(CONTAINS, UNCERTAINTY, vocabulary::uncertainty_text(f)),
        ]);
        for lung in &f.lungs {
            items.push(
                Item::num(what, INVOLVEMENT, lung.involvement.involvement_pct, 2, PERCENT)?
                    .child(self.finding_site(lung.side, None)?),
            );
        }
        for effusion in &f.effusions {
            let mut props = vec![Item::num(what, VOLUME, effusion.volume_ml, 2, ML)?];
            if let Some(hu) = effusion.mean_hu {
                props.push(Item::num(what, ATTENUATION_COEFFICIENT, hu, 1, HU)?.child(Item::code(
                    HAS_CONCEPT_MOD,
                    DERIVATION,
                    MEAN,
                )));
            }
            props.push(Item::num(what, CRANIOCAUDAL_EXTENT, effusion.craniocaudal_extent_mm, 1, MM)?);
            items.push(
                Item::text(CONTAINS, PLEURAL_EFFUSION, effusion.text.clone())
                    .child(laterality(effusion.side))
                    .with(properties(props)),
            );
        }
        for region in &f.indeterminate_dense {
            items.push(
                Item::text(CONTAINS, INDETERMINATE_DENSE, region.text.clone())
                    .child(self.finding_site(region.side, None)?)
                    .with(properties(vec![Item::num(what, VOLUME, region.volume_ml, 2, ML)?])),
            );
        }
        for lesion in &f.focal_lesions {
            let props = vec![
                Item::num(what, VOLUME, lesion.volume_ml, 2, ML)?,
                Item::num(what, EQUIVALENT_DIAMETER, lesion.equivalent_diameter_mm, 1, MM)?,
                Item::num(what, MAX_INPLANE_DIAMETER, lesion.max_inplane_diameter_mm, 1, MM)?,
                Item::num(what, ATTENUATION_COEFFICIENT, lesion.mean_hu, 1, HU)?.child(Item::code(
                    HAS_CONCEPT_MOD,
                    DERIVATION,
                    MEAN,
                )),
            ];
            items.push(
                Item::text(CONTAINS, FOCAL_OPACITY, lesion.text.clone())
                    .child(self.finding_site(lesion.side, Some(lesion.level))?)
                    .with(properties(props)),
            );
        }
        for caution in &f.cautions {
            items.push(Item::text(CONTAINS, CAUTION, caution.clone()));
        }
        items.push(Item::code(CONTAINS, RSNA_SUGGESTION, pattern_code(f.pattern)));
        items.push(Item::text(CONTAINS, SUGGESTION_BASIS, f.pattern_rationale.clone()));
        items.push(Item::text(CONTAINS, METHOD_AND_LIMITS, self.method_text()));
        Ok(Item::container(CONTAINS, QUALITATIVE_EVALUATIONS, None).with(items))
    }

    /// What the method is and is not, from the manifest.
    fn method_text(&self) -> String {
        let m = self.input.manifest;
        let kind = if m.kind == "rule-based" {
            "a rule-based quantitative CT method, not a trained classifier"
        } else {
            "a trained segmentation model"
        };
        let mut text = format!(
            "{} {} ({}; kind: {}): {} The severity score, extent class and RSNA category are derived by \
             fixed rules from the masks (the category from the opacity distribution only, not from \
             morphology). These are measurements of a quantitative method, not a diagnosis; every value \
             is to be confirmed by a radiologist.",
            m.name,
            m.version,
            kind,
            m.kind,
            m.description.trim()
        );
        if let Some(use_) = m.intended_use.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            text.push_str(" Intended use: ");
            text.push_str(use_);
        }
        text
    }

    /// TID 1411 Volumetric ROI Measurements and Qualitative Evaluations of a lung or a zone,
    /// referencing the lung's segment.
    fn volumetric_group(
        &self,
        side: Side,
        level: Option<Level>,
        inv: &Involvement,
        mean_hu: Option<f64>,
        score: Option<u8>,
    ) -> Result<Item, ReportError> {
        let (lung, segment) = self.segment(Self::lung_role(side))?;
        let what = self.what;
        let key = match level {
            Some(l) => format!("{}-{}", side_key(side), level_key(l)),
            None => side_key(side).to_owned(),
        };
        let label = match level {
            Some(l) => format!("{} lung, {} third", side_key(side), level_key(l)),
            None => format!("{} lung", side_key(side)),
        };
        let mut items = self.segment_group_head(label, &key, lung, segment);
        items.extend([
            self.finding_site(side, level)?,
            Item::num(what, VOLUME, inv.lung_ml, 2, ML)?.with(self.algorithm()),
            Item::num(what, OPACITY_VOLUME, inv.opacity_ml, 2, ML)?.with(self.algorithm()),
            Item::num(what, INVOLVEMENT, inv.involvement_pct, 2, PERCENT)?.with(self.algorithm()),
        ]);
        if let Some(hu) = mean_hu {
            items.push(
                Item::num(what, ATTENUATION_COEFFICIENT, hu, 1, HU)?
                    .child(Item::code(HAS_CONCEPT_MOD, DERIVATION, MEAN))
                    .with(self.algorithm()),
            );
        }
        if let Some(s) = score {
            items.push(Item::num(what, ZONE_SCORE, f64::from(s), 0, SCORE)?.with(self.algorithm()));
        }
        Ok(Item::container(CONTAINS, MEASUREMENT_GROUP, Some("1411")).with(items))
    }

    /// The first rows of a TID 1411 group: tracking identifier and UID
    /// (`volumetric-tracking-<key>`), the finding, the referenced SEG segment and its source series.
    fn segment_group_head(&self, label: String, key: &str, finding: Cd2, segment: u16) -> Vec<Item> {
        vec![
            Item::text(HAS_OBS_CONTEXT, TRACKING_IDENTIFIER, label),
            Item::uidref(HAS_OBS_CONTEXT, TRACKING_UID, self.input.uids.other(&format!("volumetric-tracking-{key}"))),
            Item::code(CONTAINS, FINDING, finding),
            Item::image(
                CONTAINS,
                Some(REFERENCED_SEGMENT),
                SEGMENTATION_STORAGE,
                &self.input.uids.seg_instance,
                Some(segment),
            ),
            Item::uidref(CONTAINS, SOURCE_SERIES_FOR_SEGMENTATION, self.input.volume.series_instance_uid.clone()),
        ]
    }

    /// TID 1411 group of a pleural effusion, referencing its SEG segment; `None` when the SEG has
    /// no such segment (the manifest lacks the output or the segmentation its channel).
    fn effusion_group(&self, effusion: &Effusion) -> Result<Option<Item>, ReportError> {
        let role = vocabulary::roles::pleural_effusion(effusion.side);
        let m = self.input.manifest;
        let Some(out) =
            m.channel(role).filter(|&c| c < self.input.segmentation.channels.len()).and_then(|c| m.outputs.get(c))
        else {
            return Ok(None);
        };
        let (finding, segment) = self.segment(role)?;
        let what = self.what;
        let side = side_key(effusion.side);
        let label = format!("{side} {}", vocabulary::PLEURAL_EFFUSION.label);
        let mut items = self.segment_group_head(label, &format!("{side}-effusion"), finding, segment);
        if let (Some(scheme), Some(value), Some(meaning)) =
            (&out.anatomic_region_scheme, &out.anatomic_region_value, &out.anatomic_region_meaning)
        {
            let region = Cd2 { value: value.clone(), scheme: scheme.clone(), meaning: meaning.clone() };
            items.push(Item::code(HAS_CONCEPT_MOD, FINDING_SITE, region).child(laterality(effusion.side)));
        }
        items.push(Item::num(what, VOLUME, effusion.volume_ml, 2, ML)?.with(self.algorithm()));
        if let Some(hu) = effusion.mean_hu {
            items.push(
                Item::num(what, ATTENUATION_COEFFICIENT, hu, 1, HU)?
                    .child(Item::code(HAS_CONCEPT_MOD, DERIVATION, MEAN))
                    .with(self.algorithm()),
            );
        }
        items
            .push(Item::num(what, CRANIOCAUDAL_EXTENT, effusion.craniocaudal_extent_mm, 1, MM)?.with(self.algorithm()));
        Ok(Some(Item::container(CONTAINS, MEASUREMENT_GROUP, Some("1411")).with(items)))
    }

    /// The volumetric SR with these TID 1411 `groups`: no Image Library entries, the CT and the
    /// SEG as evidence, series [`VOLUMETRIC_SR_SERIES_NUMBER`], no predecessor.
    fn volumetric_document(
        &self,
        groups: Vec<Item>,
        description: &str,
    ) -> Result<FileDicomObject<InMemDicomObject>, ReportError> {
        let input = self.input;
        let mut content = self.preamble();
        content.push(self.image_library(false));
        content.push(Item::container(CONTAINS, IMAGING_MEASUREMENTS, None).with(groups));
        let references = vec![
            (input.volume.series_instance_uid.clone(), self.ct_references()),
            (input.uids.seg_series.clone(), vec![(SEGMENTATION_STORAGE.to_owned(), input.uids.seg_instance.clone())]),
        ];
        let (series_uid, instance_uid) = volumetric_sr_uids(input.uids);
        self.document(Document {
            title: DIAGNOSTIC_IMAGING_REPORT,
            series_uid: &series_uid,
            instance_uid: &instance_uid,
            series_number: VOLUMETRIC_SR_SERIES_NUMBER,
            description,
            content,
            references,
            predecessor: None,
        })
    }

    /// The SR document: Patient and General Study (copied), SR Document Series, General
    /// Equipment, SR Document General, SR Document Content and SOP Common modules
    /// (PS3.3 A.35.13-1).
    fn document(&self, d: Document<'_>) -> Result<FileDicomObject<InMemDicomObject>, ReportError> {
        let input = self.input;
        let m = input.manifest;
        // Patient, General Study, SOP Common, SR Document Series
        let mut obj = new_instance(
            input,
            &SeriesHeader {
                sop_class_uid: COMPREHENSIVE_3D_SR_STORAGE,
                sop_instance_uid: d.instance_uid,
                modality: "SR",
                series_instance_uid: d.series_uid,
                series_number: d.series_number,
                series_description: d.description,
            },
        );
        if obj.get(tags::STUDY_INSTANCE_UID).is_none() {
            put_str(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, &self.study_uid);
        }
        let mut scheme = InMemDicomObject::new_empty();
        put_str(&mut scheme, tags::CODING_SCHEME_DESIGNATOR, VR::SH, LOCAL_SCHEME);
        put_str(&mut scheme, tags::CODING_SCHEME_NAME, VR::ST, "firstread local codes");
        put_str(&mut scheme, tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION, VR::ST, "firstread");
        put_seq(&mut obj, tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE, vec![scheme]);
        put_seq(&mut obj, tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, Vec::new());
        // General Equipment
        put_str(&mut obj, tags::MANUFACTURER, VR::LO, MANUFACTURER);
        put_str(&mut obj, tags::MANUFACTURER_MODEL_NAME, VR::LO, "firstread");
        let versions = [
            truncate(&format!("firstread {}", env!("CARGO_PKG_VERSION")), 64),
            truncate(&format!("{} {}", m.name, m.version), 64),
        ];
        obj.put(DataElement::new(
            tags::SOFTWARE_VERSIONS,
            VR::LO,
            PrimitiveValue::Strs(versions.into_iter().collect()),
        ));
        // SR Document General
        put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");
        put_str(&mut obj, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
        put_str(&mut obj, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
        put_str(&mut obj, tags::CONTENT_DATE, VR::DA, &input.content_date);
        put_str(&mut obj, tags::CONTENT_TIME, VR::TM, &input.content_time);
        put_seq(&mut obj, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![code_dataset(&CT_OF_CHEST.into())]);
        let evidence = d
            .references
            .iter()
            .filter(|(_, sops)| !sops.is_empty())
            .map(|(series, sops)| (series.as_str(), sops.iter().map(|(c, i)| (c.as_str(), i.as_str())).collect()))
            .collect::<Vec<(&str, Vec<(&str, &str)>)>>();
        put_seq(
            &mut obj,
            tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
            vec![hierarchical_reference(&self.study_uid, &evidence)],
        );
        if let Some((class, instance, series)) = &d.predecessor {
            let reference = hierarchical_reference(
                &self.study_uid,
                &[(series.as_str(), vec![(class.as_str(), instance.as_str())])],
            );
            put_seq(&mut obj, tags::PREDECESSOR_DOCUMENTS_SEQUENCE, vec![reference]);
        }
        // SR Document Content: the root container
        let root = Item::container(CONTAINS, d.title, Some("1500")).with(d.content);
        root.write(&mut obj, true);
        obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(EXPLICIT_VR_LITTLE_ENDIAN))
            .map_err(|e| err(self.what, e.to_string()))
    }
}

/// PS3.3 Table C.17-3 Hierarchical SOP Instance Reference Macro for one study.
fn hierarchical_reference(study: &str, series: &[(&str, Vec<(&str, &str)>)]) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    let items = series
        .iter()
        .map(|(uid, sops)| {
            let mut s = InMemDicomObject::new_empty();
            put_seq(
                &mut s,
                tags::REFERENCED_SOP_SEQUENCE,
                sops.iter().map(|(c, i)| sop_reference(c, i, None)).collect(),
            );
            put_str(&mut s, tags::SERIES_INSTANCE_UID, VR::UI, uid);
            s
        })
        .collect();
    put_seq(&mut o, tags::REFERENCED_SERIES_SEQUENCE, items);
    put_str(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, study);
    o
}

fn side_key(side: Side) -> &'static str {
    side.name()
}

fn level_key(level: Level) -> &'static str {
    level.name()
}

/// HAS CONCEPT MOD Laterality (272741003) of a side.
fn laterality(side: Side) -> Item {
    let value = match side {
        Side::Left => LEFT,
        Side::Right => RIGHT,
    };
    Item::code(HAS_CONCEPT_MOD, LATERALITY, value)
}

/// Measurements of a finding: its NUM items as HAS PROPERTIES children.
fn properties(nums: Vec<Item>) -> Vec<Item> {
    nums.into_iter().map(|n| n.relationship(HAS_PROPERTIES)).collect()
}

/// Private code of a cranio-caudal third (zones are thirds of a lung's volume, not lobes).
fn zone_code(level: Level) -> Cd {
    match level {
        Level::Upper => ("UPPER-THIRD", LOCAL_SCHEME, "Upper third of the lung volume (cranio-caudal)"),
        Level::Middle => ("MIDDLE-THIRD", LOCAL_SCHEME, "Middle third of the lung volume (cranio-caudal)"),
        Level::Lower => ("LOWER-THIRD", LOCAL_SCHEME, "Lower third of the lung volume (cranio-caudal)"),
    }
}

fn extent_code(class: ExtentClass) -> Cd {
    cd(vocabulary::extent_code(class))
}

fn pattern_code(pattern: Pattern) -> Cd {
    cd(vocabulary::pattern_code(pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_formatting() {
        assert_eq!(format_ds("t", 12.345, 2).ok().as_deref(), Some("12.35"));
        assert_eq!(format_ds("t", -0.0001, 2).ok().as_deref(), Some("0.00"));
        assert_eq!(format_ds("t", -523.44, 1).ok().as_deref(), Some("-523.4"));
        assert_eq!(format_ds("t", 1e14, 2).ok().as_deref(), Some("100000000000000"));
        assert!(format_ds("t", f64::NAN, 2).is_err());
    }

    #[test]
    fn source_points_follow_source_pixels() {
        for (flip_rows, flip_cols) in [(false, false), (true, false), (false, true), (true, true)] {
            let v = firstread_volume::Volume {
                hu: vec![0.0; 24],
                shape: [1, 4, 6],
                spacing_mm: [1.0; 3],
                origin_mm: [0.0; 3],
                axes: [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]],
                slices: Vec::new(),
                flip_rows,
                flip_cols,
                study_instance_uid: String::new(),
                series_instance_uid: String::new(),
                frame_of_reference_uid: None,
                patient_position: None,
                warnings: Vec::new(),
            };
            for r in 0..4 {
                for c in 0..6 {
                    let (row, col) = v.source_pixel(r, c);
                    let p = source_point(&v, r as f64 + 0.5, c as f64 + 0.5);
                    assert_eq!(p, (row as f64 + 0.5, col as f64 + 0.5));
                }
            }
            // pixel edges stay inside [0, rows] x [0, cols]
            assert_eq!(
                source_point(&v, 0.0, 0.0),
                (if flip_rows { 4.0 } else { 0.0 }, if flip_cols { 6.0 } else { 0.0 })
            );
        }
    }

    /// The SR's own codes (the vocabulary's are checked in `firstread-findings`).
    #[test]
    fn local_codes_fit_their_vrs() {
        let mut all = vec![SUGGESTION_BASIS, METHOD_AND_LIMITS];
        all.extend([Level::Upper, Level::Middle, Level::Lower].map(zone_code));
        all.extend(ExtentClass::ALL.map(extent_code));
        all.extend([Pattern::Typical, Pattern::Indeterminate, Pattern::Atypical, Pattern::Negative].map(pattern_code));
        for (value, scheme, meaning) in all {
            assert!(value.len() <= 16 && scheme.len() <= 16 && meaning.chars().count() <= 64, "{value}");
        }
    }
}
