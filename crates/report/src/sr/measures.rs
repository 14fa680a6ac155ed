//! The two SR documents of a model described by the measurement vocabulary alone (no findings
//! extension): the same TID 1500 structure as the COVID-19 reports, written from the manifest's
//! codes and the computed [`firstread_findings::measures::Measures`].
//!
//! - [`build_sr`]: no planar groups (the vocabulary has no key slices), an empty Imaging
//!   Measurements container, and Qualitative Evaluations: each
//!   classification as a CODE item (concept: the classification's code, value: its band's code)
//!   with the classified value (HAS PROPERTIES NUM) and every class the value's validated error also
//!   allows ("Class within the method's error"); each whole-region measurement as a NUM with its
//!   finding site; the summary text; the method and its limits. Titled (18748-4, LN, "Diagnostic
//!   imaging report") with an empty Image Library, as the volumetric SR: OHIF 3.13 loads the
//!   measurements of every (126000, DCM) report it opens, and its error boundary fails on one with
//!   none ("Cannot destructure property 'displaySetInstanceUID' of 'measurement'", seen in
//!   tests/ohif.rs); under this title it shows the document as text.
//! - [`build_volumetric_sr`] (18748-4): one TID 1411 group per segment and per third of it, each
//!   referencing its SEG segment, with every measurement of that region.
//!
//! Series descriptions start with the model's name and version ("emphysema-ct 0.1.0 first read"),
//! so that a study read by several packages lists which series is whose.

use dicom_object::{FileDicomObject, InMemDicomObject};
use firstread_findings::measures::{CodeSpec, Measurement};
use firstread_findings::Level;

use super::{
    ucum, zone_code, Cd, Cd2, Context, Document, Item, CONTAINS, DIAGNOSTIC_IMAGING_REPORT, FINDING_SITE,
    HAS_CONCEPT_MOD, HAS_PROPERTIES, IMAGING_MEASUREMENTS, MEASUREMENT_GROUP, METHOD_AND_LIMITS,
    QUALITATIVE_EVALUATIONS, SR_SERIES_NUMBER, TOPOGRAPHICAL_MODIFIER,
};
use crate::ReportError;

/// A class the method's validated error also allows.
const POSSIBLE_CLASS: Cd = ("POSSIBLE-CLASS", super::LOCAL_SCHEME, "Class within the method's error");
/// The summary a person reads first.
const SUMMARY: Cd = ("SUMMARY", super::LOCAL_SCHEME, "Summary");

fn code(c: &CodeSpec) -> Cd2 {
    Cd2 { value: c.value.clone(), scheme: c.scheme.clone(), meaning: c.meaning.clone() }
}

/// A measurement as a NUM item (`None`: not measured, left out; the summary says it).
fn num(ctx: &Context<'_>, m: &Measurement) -> Result<Option<Item>, ReportError> {
    let Some(value) = m.value else { return Ok(None) };
    let value = super::format_ds(ctx.what, value, m.kind.decimals())?;
    Ok(Some(Item::new(CONTAINS, Some(code(&m.code)), super::Value::Num { value, unit: ucum(m.kind.unit()) })))
}

/// The finding site of a region: the segment's Segmented Property Type, or the manifest's code of
/// a combined region; `None` when it has neither.
fn finding_site(ctx: &Context<'_>, region: &str, zone: Option<Level>) -> Option<Item> {
    let m = ctx.input.manifest;
    let site = match m.outputs.iter().find(|o| o.name == region) {
        Some(o) => Cd2 { value: o.type_value.clone(), scheme: o.type_scheme.clone(), meaning: o.type_meaning.clone() },
        None => code(m.measurements.iter().find(|s| s.combined.as_deref() == Some(region))?.combined_code.as_ref()?),
    };
    let mut item = Item::new(HAS_CONCEPT_MOD, Some(FINDING_SITE.into()), super::Value::Code(site));
    if let Some(level) = zone {
        item = item.child(Item::code(HAS_CONCEPT_MOD, TOPOGRAPHICAL_MODIFIER, zone_code(level)));
    }
    Some(item)
}

/// The displayable SR of a vocabulary model (module doc).
pub(super) fn build_sr(ctx: &Context<'_>) -> Result<FileDicomObject<InMemDicomObject>, ReportError> {
    let input = ctx.input;
    let measures = input.measures;
    let mut items = Vec::new();
    for c in &measures.classifications {
        let Some(class) = &c.class else { continue };
        let mut item =
            Item::new(CONTAINS, Some(code_of_classification(ctx, &c.key)), super::Value::Code(code(&class.code)));
        if let Some(m) =
            measures.measurements.iter().find(|m| m.key == c.measurement && m.region == c.region && m.zone.is_none())
        {
            if let Some(n) = num(ctx, m)? {
                item = item.child(n.relationship(HAS_PROPERTIES));
            }
        }
        // a class the method's error allows is said, never rounded away
        for p in &c.possible {
            item =
                item.child(Item::new(HAS_PROPERTIES, Some(POSSIBLE_CLASS.into()), super::Value::Code(code(&p.code))));
        }
        items.push(item);
    }
    for m in measures.measurements.iter().filter(|m| m.zone.is_none()) {
        if let Some(mut n) = num(ctx, m)? {
            if let Some(site) = finding_site(ctx, &m.region, None) {
                n = n.child(site);
            }
            items.push(n.with(ctx.algorithm()));
        }
    }
    items.push(Item::text(CONTAINS, SUMMARY, summary(ctx)));
    items.push(Item::text(CONTAINS, METHOD_AND_LIMITS, method_text(ctx)));
    let mut content = ctx.preamble();
    content.push(ctx.image_library(false));
    content.push(Item::container(CONTAINS, IMAGING_MEASUREMENTS, None));
    content.push(Item::container(CONTAINS, QUALITATIVE_EVALUATIONS, None).with(items));
    let description = format!("{} {} first read", input.manifest.name, input.manifest.version);
    ctx.document(Document {
        title: DIAGNOSTIC_IMAGING_REPORT,
        series_uid: &input.uids.sr_series,
        instance_uid: &input.uids.sr_instance,
        series_number: SR_SERIES_NUMBER,
        description: &description,
        content,
        references: vec![(input.volume.series_instance_uid.clone(), ctx.ct_references())],
        predecessor: input.predecessor_sr.clone(),
    })
}

/// The volumetric SR of a vocabulary model (module doc).
pub(super) fn build_volumetric_sr(ctx: &Context<'_>) -> Result<FileDicomObject<InMemDicomObject>, ReportError> {
    let input = ctx.input;
    let measurements = &input.measures.measurements;
    let mut groups = Vec::new();
    // regions in manifest order, each segment then its thirds
    let mut regions: Vec<(&str, Option<Level>)> = Vec::new();
    for m in measurements {
        let key = (m.region.as_str(), m.zone);
        if !regions.contains(&key) {
            regions.push(key);
        }
    }
    for (region, zone) in regions {
        // a segment of the SEG (combined regions are not: they are in the displayable SR)
        let Some(channel) = input.manifest.channel(region).filter(|&c| c < input.segmentation.channels.len()) else {
            continue;
        };
        let (finding, segment) = ctx.segment(region)?;
        let label = match zone {
            Some(level) => format!("{}, {} third", finding.meaning, level.name()),
            None => finding.meaning.clone(),
        };
        let key = match zone {
            Some(level) => format!("{channel}-{}", level.name()),
            None => channel.to_string(),
        };
        let mut items = ctx.segment_group_head(label, &format!("measures-{key}"), finding, segment);
        if let Some(site) = zone.and_then(|z| finding_site(ctx, region, Some(z))) {
            items.push(site);
        }
        for m in measurements.iter().filter(|m| m.region == region && m.zone == zone) {
            if let Some(n) = num(ctx, m)? {
                items.push(n.with(ctx.algorithm()));
            }
        }
        groups.push(Item::container(CONTAINS, MEASUREMENT_GROUP, Some("1411")).with(items));
    }
    let description = format!("{} {} volumetric measurements", input.manifest.name, input.manifest.version);
    ctx.volumetric_document(groups, &description)
}

fn code_of_classification(ctx: &Context<'_>, key: &str) -> Cd2 {
    let spec = ctx.input.manifest.classifications.iter().find(|c| c.key == key);
    spec.map_or_else(
        || Cd2 { value: key.into(), scheme: super::LOCAL_SCHEME.into(), meaning: key.into() },
        |c| code(&c.code),
    )
}

/// The classes, then every whole-region value ("not measured" where a region is empty).
pub(super) fn summary(ctx: &Context<'_>) -> String {
    let m = ctx.input.measures;
    let mut parts: Vec<String> = m.classifications.iter().map(|c| c.text()).collect();
    for x in m.measurements.iter().filter(|x| x.zone.is_none()) {
        parts.push(x.text(&region_label(ctx.input.manifest, &x.region)));
    }
    parts.join("; ")
}

/// A region as text: a segment's label in lower case ("left lung"), a combined region's name with
/// spaces ("both lungs").
pub(crate) fn region_label(manifest: &firstread_inference::Manifest, region: &str) -> String {
    manifest
        .outputs
        .iter()
        .find(|o| o.name == region)
        .map_or_else(|| region.replace('_', " "), |o| o.segment_label.to_lowercase())
}

/// What the method is and is not, from the manifest.
fn method_text(ctx: &Context<'_>) -> String {
    let m = ctx.input.manifest;
    let mut text = format!(
        "{} {} (kind: {}): {} Values are measurements of a quantitative method, not a diagnosis; every value is \
         to be confirmed by a radiologist.",
        m.name,
        m.version,
        m.kind,
        m.description.trim()
    );
    for c in &m.classifications {
        if let Some(source) = &c.source {
            text.push_str(&format!(" {}: {source}.", c.label));
        }
    }
    if let Some(use_) = m.intended_use.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        text.push_str(" Intended use: ");
        text.push_str(use_);
    }
    text
}
