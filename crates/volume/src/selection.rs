//! Series selection: which series of the study becomes the volume, and why each other was not.
//!
//! 1. Headers of all files are grouped by Series Instance UID (0020,000E).
//! 2. Within a series, only original CT images count: SOP Class CT Image Storage
//!    (1.2.840.10008.5.1.4.1.1.2), Modality (0008,0060) CT, Image Type (0008,0008) containing
//!    ORIGINAL and PRIMARY and neither LOCALIZER nor SCOUT. Localizers are projections, not
//!    slices; DERIVED/SECONDARY images are reformats, MIPs or derived maps whose HU and geometry
//!    are not the acquisition's. Other objects (dose reports, secondary captures, SR, presentation
//!    states) are ignored with a note; Enhanced CT (multi-frame) is not supported yet. A series
//!    with no such image is skipped with that reason. The classification is
//!    `firstread_store::candidate::instance_kind`, shared with study assembly.
//! 3. A series whose Body Part Examined (0018,0015) of its first original image the model does not
//!    take (`VolumeContract::takes`, the manifest's `[takes]`) is skipped with that reason.
//!    Each remaining series must pass the geometry rules of [`crate::geometry`]; one that fails is
//!    skipped with the refusal as its reason.
//! 4. Among the series that pass, the preferred one covers the z-range best (any series within
//!    90 % of the longest coverage counts as full coverage: the lung model needs the whole
//!    thorax), then has thinner slices (spacing rounded to 0.01 mm: more detail along z), then a
//!    softer kernel ([`crate::kernel`]), then more slices; ties go to the lowest Series Instance UID
//!    so that the choice does not depend on file order.
//! 5. When no series passes step 3 but some passed step 2, the refusal of the one with the most
//!    images is returned (it says what to fix); when none passed step 2,
//!    [`Refusal::NoSuitableSeries`] lists every decision.

use std::collections::BTreeMap;

use firstread_store::candidate::{self, InstanceKind};

use crate::contract::VolumeContract;
use crate::error::Refusal;
use crate::geometry::{plan_series, SeriesPlan};
use crate::header::InstanceHeader;
use crate::kernel::{classify_kernel, KernelClass};

/// Why a series was chosen or skipped (one per series of the study).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SeriesDecision {
    /// Series Instance UID (0020,000E).
    pub series_instance_uid: String,
    /// Series Description (0008,103E).
    pub series_description: Option<String>,
    /// Whether this series became the volume.
    pub chosen: bool,
    /// Why, in words, with the numbers that decided.
    pub reason: String,
    /// Slices in the volume for the chosen series; otherwise the original CT images of the series
    /// (all its instances when it has none).
    pub slices: usize,
    /// Slice Thickness (0018,0050) of its first image, mm (informative: spacing comes from
    /// positions).
    pub slice_thickness_mm: Option<f64>,
    /// Convolution Kernel (0018,1210) of its first image.
    pub convolution_kernel: Option<String>,
}

/// The chosen series and the decisions for every series.
pub(crate) struct Selection {
    pub plan: SeriesPlan,
    pub decisions: Vec<SeriesDecision>,
}

/// A series with its instances sorted into original images and the rest.
struct ScreenedSeries {
    uid: String,
    description: Option<String>,
    images: Vec<InstanceHeader>,
    others: Vec<(InstanceKind, usize)>,
    total: usize,
    thickness: Option<f64>,
    kernel: Option<String>,
}

/// Chooses the series to analyse.
///
/// # Errors
/// As in step 5 of the module doc.
pub(crate) fn select_series(headers: Vec<InstanceHeader>, contract: &VolumeContract) -> Result<Selection, Refusal> {
    let mut decisions = Vec::new();
    let mut candidates = Vec::new();
    let mut failures: Vec<(usize, Refusal)> = Vec::new();
    for series in group_by_series(headers).into_values().map(screen_series) {
        if series.images.is_empty() {
            decisions.push(decision(&series, false, format!("skipped: {}", other_kinds(&series.others)), series.total));
            continue;
        }
        let count = series.images.len();
        let body_part = series.images.first().and_then(|h| h.attrs.body_part_examined.as_deref());
        if !contract.takes.takes_body_part(body_part) {
            let reason = format!(
                "skipped: Body Part Examined {}; the model takes {}",
                body_part.map_or_else(|| "absent".to_owned(), |b| format!("{:?}", b.trim())),
                contract.takes.describe_body_part()
            );
            decisions.push(decision(&series, false, reason, count));
            continue;
        }
        let ignored = ignored_note(&series.others);
        match plan_series(&series.uid, series.images.clone(), contract) {
            Ok(mut plan) => {
                plan.warnings.extend(ignored);
                candidates.push((plan, series));
            }
            Err(refusal) => {
                decisions.push(decision(&series, false, format!("skipped: {refusal}"), count));
                failures.push((count, refusal));
            }
        }
    }
    let max = max_coverage(&candidates);
    let mut ranked: Vec<(RankKey, SeriesPlan, ScreenedSeries)> = candidates
        .into_iter()
        .map(|(plan, series)| (rank_key(&plan, series.kernel.as_deref(), max), plan, series))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0));
    let mut ranked = ranked.into_iter();
    let Some((best_key, plan, series)) = ranked.next() else {
        log_decisions(&decisions);
        // Most images first; the lowest Series Instance UID (group order) among equals.
        let most = failures.iter().map(|(n, _)| *n).max().unwrap_or(0);
        return Err(match failures.into_iter().find(|(n, _)| *n == most) {
            Some((_, refusal)) => refusal,
            None => Refusal::NoSuitableSeries { decisions },
        });
    };
    let best_summary = summary(&plan, series.kernel.as_deref());
    let others = ranked.len();
    let tail = if others > 0 { format!("; preferred over {others} other candidate series") } else { String::new() };
    let mut all = vec![decision(&series, true, format!("chosen: {best_summary}{tail}"), plan.slices.len())];
    for (key, other_plan, other) in ranked {
        let reason = format!(
            "skipped: a valid candidate ({}), but series {} was preferred: {} ({best_summary})",
            summary(&other_plan, other.kernel.as_deref()),
            series.uid,
            deciding_key(&best_key, &key),
        );
        all.push(decision(&other, false, reason, other_plan.slices.len()));
    }
    all.extend(decisions);
    log_decisions(&all);
    Ok(Selection { plan, decisions: all })
}

fn log_decisions(decisions: &[SeriesDecision]) {
    for d in decisions {
        tracing::info!(series = %d.series_instance_uid, chosen = d.chosen, reason = %d.reason, "series decision");
    }
}

fn group_by_series(headers: Vec<InstanceHeader>) -> BTreeMap<String, Vec<InstanceHeader>> {
    let mut groups: BTreeMap<String, Vec<InstanceHeader>> = BTreeMap::new();
    for h in headers {
        groups.entry(h.attrs.series_instance_uid.clone()).or_default().push(h);
    }
    groups
}

fn screen_series(instances: Vec<InstanceHeader>) -> ScreenedSeries {
    let total = instances.len();
    let first = instances.first();
    let uid = first.map(|h| h.attrs.series_instance_uid.clone()).unwrap_or_default();
    let description = instances.iter().find_map(|h| h.attrs.series_description.clone());
    let mut images = Vec::new();
    let mut others: BTreeMap<InstanceKind, usize> = BTreeMap::new();
    for h in instances {
        match instance_kind(&h) {
            InstanceKind::OriginalImage => images.push(h),
            kind => *others.entry(kind).or_default() += 1,
        }
    }
    let reference = images.first();
    let thickness = reference.and_then(|h| h.attrs.slice_thickness);
    let kernel = reference.and_then(|h| h.attrs.convolution_kernel.clone());
    ScreenedSeries { uid, description, images, others: others.into_iter().collect(), total, thickness, kernel }
}

/// Classifies one instance ([`firstread_store::candidate::instance_kind`], which study assembly
/// uses too, so that what makes a study ready early is what is read here).
fn instance_kind(h: &InstanceHeader) -> InstanceKind {
    candidate::instance_kind(&h.attrs.sop_class_uid, h.attrs.modality.as_deref(), h.attrs.image_type.as_deref())
}

fn other_kinds(others: &[(InstanceKind, usize)]) -> String {
    others.iter().map(|(k, n)| format!("{n} x {}", k.describe())).collect::<Vec<_>>().join("; ")
}

fn ignored_note(others: &[(InstanceKind, usize)]) -> Option<String> {
    (!others.is_empty()).then(|| format!("instances of the series ignored: {}", other_kinds(others)))
}

fn decision(series: &ScreenedSeries, chosen: bool, reason: String, slices: usize) -> SeriesDecision {
    SeriesDecision {
        series_instance_uid: series.uid.clone(),
        series_description: series.description.clone(),
        chosen,
        reason,
        slices,
        slice_thickness_mm: series.thickness,
        convolution_kernel: series.kernel.clone(),
    }
}

/// Ranking key of a candidate, greater is better (see step 4 of the module doc). A tuple of
/// integers and booleans: a total order, so sorting and `max_by_key` are well defined.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RankKey {
    full_coverage: bool,
    thinner: std::cmp::Reverse<i64>,
    kernel: KernelClass,
    slices: usize,
    lower_uid: std::cmp::Reverse<String>,
}

fn rank_key(plan: &SeriesPlan, kernel: Option<&str>, max_coverage: f64) -> RankKey {
    RankKey {
        full_coverage: plan.coverage_mm() >= 0.9 * max_coverage,
        thinner: std::cmp::Reverse((plan.spacing_mm * 100.0).round() as i64),
        kernel: classify_kernel(kernel),
        slices: plan.slices.len(),
        lower_uid: std::cmp::Reverse(plan.series_instance_uid.clone()),
    }
}

fn max_coverage(candidates: &[(SeriesPlan, ScreenedSeries)]) -> f64 {
    candidates.iter().map(|(p, _)| p.coverage_mm()).fold(0.0, f64::max)
}

fn deciding_key(best: &RankKey, other: &RankKey) -> &'static str {
    if best.full_coverage != other.full_coverage {
        "it covers more of the z-range"
    } else if best.thinner != other.thinner {
        "it has thinner slices"
    } else if best.kernel != other.kernel {
        "it has a softer reconstruction kernel"
    } else if best.slices != other.slices {
        "it has more slices"
    } else {
        "equal rank, tie broken by the lower Series Instance UID"
    }
}

fn summary(plan: &SeriesPlan, kernel: Option<&str>) -> String {
    format!(
        "{} slices at {:.2} mm spacing covering {:.1} mm, kernel {} ({})",
        plan.slices.len(),
        plan.spacing_mm,
        plan.coverage_mm(),
        kernel.unwrap_or("absent"),
        classify_kernel(kernel).name()
    )
}
