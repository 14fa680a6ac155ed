//! The measurement vocabulary a model package declares in its manifest, implemented once.
//!
//! A package's `manifest.toml` lists `[[measurements]]` and `[[classifications]]`
//! ([`MeasurementSpec`], [`ClassificationSpec`]); the node computes them on the HU volume the
//! model saw and the package's output masks ([`compute`]), and the SR, the JSON, the text and
//! the messages are written from the result ([`Measures`]). A new model that needs nothing beyond
//! this vocabulary is a folder: no Rust changes.
//!
//! Kinds ([`Kind`]), each over a *region*: one output segment, the union of several
//! ([`MeasurementSpec::combined`]), or a cranio-caudal third of a segment's volume
//! ([`MeasurementSpec::zones`], the split of [`crate::ZoneFindings`]):
//! - `volume`: voxel count x voxel volume (mL);
//! - `percent_within`: 100 x voxels of the `part` segment inside the region / voxels of the
//!   region (%);
//! - `hu_mean`: mean HU of the region's voxels (HU);
//! - `hu_percentile`: the `percentile`-th percentile of the region's HU, the nearest-rank value of
//!   the HU histogram in 1 HU bins (HU) (e.g. PD15, the 15th percentile of lung density);
//! - `percent_at_or_below`: 100 x voxels with HU <= `hu` / voxels of the region (%) (e.g.
//!   %LAA-950, the low attenuation area at -950 HU);
//! - `percent_above`: 100 x voxels with HU > `hu` / voxels of the region (%).
//!
//! A classification maps one measurement of one region to a class by bands of its value, and
//! states the other classes the value's validated error allows ([`Classification::possible`]),
//! so that an unsure result is said to be unsure and never rounded to the harmless side.
//!
//! An empty region has no value (`None`), said as "not measured: no voxels".

use serde::{Deserialize, Serialize};

use crate::vocabulary::{Unit, HU, ML, PERCENT};
use crate::Level;

/// What a measurement computes (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Volume of the region (mL).
    Volume,
    /// Share of the region inside the `part` segment (%).
    PercentWithin,
    /// Mean HU of the region.
    HuMean,
    /// A percentile of the region's HU.
    HuPercentile,
    /// Share of the region at or below `hu` (%).
    PercentAtOrBelow,
    /// Share of the region above `hu` (%).
    PercentAbove,
}

impl Kind {
    /// The unit of its values.
    pub fn unit(self) -> Unit {
        match self {
            Kind::Volume => ML,
            Kind::PercentWithin | Kind::PercentAtOrBelow | Kind::PercentAbove => PERCENT,
            Kind::HuMean | Kind::HuPercentile => HU,
        }
    }

    /// Decimals of its display and SR values.
    pub fn decimals(self) -> usize {
        match self {
            Kind::HuMean | Kind::HuPercentile => 0,
            _ => 1,
        }
    }
}

/// A coded concept from a manifest (PS3.3 Table 8.8-1): Code Value (at most 16 characters, or a
/// Long Code Value), Coding Scheme Designator, Code Meaning (at most 64 characters).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct CodeSpec {
    /// Coding Scheme Designator ("SCT", "DCM", "LN", "99FIRSTREAD").
    pub scheme: String,
    /// Code Value.
    pub value: String,
    /// Code Meaning.
    pub meaning: String,
}

/// One `[[measurements]]` entry of a manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementSpec {
    /// Its name in the job JSON (unique in the manifest).
    pub key: String,
    /// What it computes.
    pub kind: Kind,
    /// Output names (manifest `[[outputs]] name`) it is measured in, each on its own.
    pub segments: Vec<String>,
    /// Also measured over the union of `segments`, reported as a region of this name.
    #[serde(default)]
    pub combined: Option<String>,
    /// The anatomy of the combined region (the SR's finding site), e.g. Lung.
    #[serde(default)]
    pub combined_code: Option<CodeSpec>,
    /// Also per upper, middle and lower third of each segment's volume.
    #[serde(default)]
    pub zones: bool,
    /// `percent_within`: the segment whose share is measured.
    #[serde(default)]
    pub part: Option<String>,
    /// `percent_at_or_below` / `percent_above`: the threshold (HU).
    #[serde(default)]
    pub hu: Option<f64>,
    /// `hu_percentile`: which percentile (0-100).
    #[serde(default)]
    pub percentile: Option<f64>,
    /// Display label ("LAA-950").
    pub label: String,
    /// Its concept (the SR's concept name).
    pub code: CodeSpec,
    /// What it means, for people.
    #[serde(default)]
    pub description: Option<String>,
}

/// One band of a classification: values below `below` (the last band: every value left).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    /// Upper bound, exclusive; `None` for the last band.
    #[serde(default)]
    pub below: Option<f64>,
    /// Machine name ("none", "mild", ...).
    pub value: String,
    /// Display label ("emphysema (>= 5 %)").
    pub label: String,
    /// Coded class (the SR's coded value).
    pub code: CodeSpec,
    /// Outside the normal range (messages flag it).
    #[serde(default)]
    pub abnormal: bool,
}

/// One `[[classifications]]` entry of a manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassificationSpec {
    /// Its name in the job JSON.
    pub key: String,
    /// Display label.
    pub label: String,
    /// The measurement (`key`) it classifies ...
    pub measurement: String,
    /// ... in this region (a segment or the measurement's `combined` name).
    pub region: String,
    /// The measurement's validated error, in its unit: a value within it of a bound also gives the
    /// class across the bound as possible.
    #[serde(default)]
    pub absolute_error: f64,
    /// Its concept (the SR's concept name).
    pub code: CodeSpec,
    /// Where the bands come from.
    #[serde(default)]
    pub source: Option<String>,
    /// Bands in increasing order.
    pub bands: Vec<Band>,
}

/// A measured value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    /// The spec's key.
    pub key: String,
    /// The spec's label.
    pub label: String,
    /// The spec's concept.
    pub code: CodeSpec,
    /// What it computes.
    pub kind: Kind,
    /// The region: a segment name or a `combined` name.
    pub region: String,
    /// The third of the region's segment, for per-zone values.
    pub zone: Option<Level>,
    /// The value in `unit`; `None` when the region has no voxels.
    pub value: Option<f64>,
    /// UCUM code of the unit ("ml", "%", "[hnsf'U]").
    pub unit: &'static str,
    /// Display symbol of the unit.
    pub unit_symbol: &'static str,
    /// Voxels of the region.
    pub voxels: u64,
}

impl Measurement {
    /// "LAA-950, left lung, upper third: 4.2 %"-style text with `region_label` naming the region.
    pub fn text(&self, region_label: &str) -> String {
        let place = match self.zone {
            Some(z) => format!("{region_label}, {} third", z.name()),
            None => region_label.to_owned(),
        };
        match self.value {
            Some(v) => {
                let d = self.kind.decimals();
                format!("{}, {place}: {v:.d$} {}", self.label, self.unit_symbol)
            }
            None => format!("{}, {place}: not measured (no voxels)", self.label),
        }
    }
}

/// A classified value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    /// The spec's key.
    pub key: String,
    /// The spec's label.
    pub label: String,
    /// The classified measurement's key and region.
    pub measurement: String,
    /// See `measurement`.
    pub region: String,
    /// The value classified (`None`: not measured, and no class).
    pub value: Option<f64>,
    /// The band of the value.
    pub class: Option<Band>,
    /// Other bands within the validated error of the value (said as "possibly ...").
    pub possible: Vec<Band>,
    /// Where the bands come from.
    pub source: Option<String>,
}

impl Classification {
    /// "Emphysema (LAA-950): no emphysema (< 5 %), possibly emphysema (>= 5 %)".
    pub fn text(&self) -> String {
        let Some(class) = &self.class else {
            return format!("{}: not classified (not measured)", self.label);
        };
        let mut text = format!("{}: {}", self.label, class.label);
        for p in &self.possible {
            text.push_str(&format!(", possibly {}", p.label));
        }
        text
    }

    /// The most abnormal of the class and the possible ones (for ranking and flags).
    pub fn abnormal(&self) -> bool {
        self.class.iter().chain(&self.possible).any(|b| b.abnormal)
    }
}

/// Everything computed from a manifest's vocabulary.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Measures {
    /// Each measurement per region, then per zone, in manifest order.
    pub measurements: Vec<Measurement>,
    /// Each classification.
    pub classifications: Vec<Classification>,
}

impl Measures {
    /// The value of measurement `key` over `region` (whole region, no zone).
    pub fn value(&self, key: &str, region: &str) -> Option<f64> {
        self.measurements.iter().find(|m| m.key == key && m.region == region && m.zone.is_none())?.value
    }

    /// One line a person reads first: every classification, then the classified values.
    pub fn summary_text(&self) -> String {
        self.classifications.iter().map(Classification::text).collect::<Vec<_>>().join("; ")
    }
}

/// Checks the specs against the manifest's output names.
///
/// # Errors
/// A message naming the entry and what is wrong with it.
pub fn validate(
    measurements: &[MeasurementSpec],
    classifications: &[ClassificationSpec],
    outputs: &[&str],
) -> Result<(), String> {
    let known = |s: &str| outputs.contains(&s);
    let mut keys = std::collections::HashSet::new();
    for m in measurements {
        let at = format!("measurement {:?}", m.key);
        if !keys.insert(m.key.as_str()) {
            return Err(format!("{at} is listed twice"));
        }
        if m.segments.is_empty() {
            return Err(format!("{at} names no segments"));
        }
        if let Some(s) = m.segments.iter().find(|s| !known(s)) {
            return Err(format!("{at} names segment {s:?}, which is no output"));
        }
        check_code(&at, &m.code)?;
        match m.kind {
            Kind::PercentWithin => match &m.part {
                Some(p) if known(p) => {}
                Some(p) => return Err(format!("{at}: part {p:?} is no output")),
                None => return Err(format!("{at}: percent_within needs part")),
            },
            Kind::PercentAtOrBelow | Kind::PercentAbove => {
                if !m.hu.is_some_and(f64::is_finite) {
                    return Err(format!("{at}: {:?} needs a finite hu threshold", m.kind));
                }
            }
            Kind::HuPercentile => {
                if !m.percentile.is_some_and(|p| (0.0..=100.0).contains(&p)) {
                    return Err(format!("{at}: hu_percentile needs a percentile in 0-100"));
                }
            }
            Kind::Volume | Kind::HuMean => {}
        }
    }
    for c in classifications {
        let at = format!("classification {:?}", c.key);
        let Some(m) = measurements.iter().find(|m| m.key == c.measurement) else {
            return Err(format!("{at} classifies {:?}, which is no measurement", c.measurement));
        };
        if !(m.segments.contains(&c.region) || m.combined.as_deref() == Some(c.region.as_str())) {
            return Err(format!("{at}: region {:?} is not measured by {:?}", c.region, m.key));
        }
        check_code(&at, &c.code)?;
        if !(c.absolute_error.is_finite() && c.absolute_error >= 0.0) {
            return Err(format!("{at}: absolute_error must be finite and >= 0"));
        }
        let Some((last, rest)) = c.bands.split_last() else {
            return Err(format!("{at} has no bands"));
        };
        if last.below.is_some() || rest.iter().any(|b| b.below.is_none()) {
            return Err(format!("{at}: every band but the last needs `below`; the last has none"));
        }
        if rest.windows(2).any(|w| w[0].below >= w[1].below) {
            return Err(format!("{at}: bands must be in increasing order"));
        }
        for b in &c.bands {
            check_code(&at, &b.code)?;
        }
    }
    Ok(())
}

fn check_code(at: &str, c: &CodeSpec) -> Result<(), String> {
    if c.scheme.is_empty() || c.value.is_empty() || c.meaning.is_empty() {
        return Err(format!("{at}: a code needs scheme, value and meaning"));
    }
    if c.scheme.len() > 16 || c.meaning.chars().count() > 64 {
        return Err(format!("{at}: code {:?} does not fit DICOM (scheme <= 16, meaning <= 64 characters)", c.value));
    }
    Ok(())
}

/// Computes the specs on `hu` (`[slices, rows, cols]`, the HU the model saw) with voxel spacing
/// `spacing_mm` (`[slice, row, col]`, mm), `mask(name)` giving the output named `name` (same
/// shape, non-zero inside). Specs are assumed valid ([`validate`]); a segment the masks lack
/// measures as empty.
pub fn compute<'a>(
    hu: &[f32],
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    mask: &dyn Fn(&str) -> Option<&'a [u8]>,
    measurements: &[MeasurementSpec],
    classifications: &[ClassificationSpec],
) -> Measures {
    let voxel_ml = spacing_mm.iter().product::<f64>() / 1000.0;
    let plane = shape[1] * shape[2];
    let n = hu.len();
    let get = |name: &str| mask(name).filter(|m| m.len() == n);
    let mut out = Measures::default();
    for spec in measurements {
        let part = spec.part.as_deref().and_then(get);
        let measure = |inside: &dyn Fn(usize) -> bool, range: std::ops::Range<usize>| {
            measure_region(hu, inside, range, spec, part, voxel_ml)
        };
        let push = |out: &mut Measures, region: &str, zone: Option<Level>, (value, voxels): (Option<f64>, u64)| {
            out.measurements.push(Measurement {
                key: spec.key.clone(),
                label: spec.label.clone(),
                code: spec.code.clone(),
                kind: spec.kind,
                region: region.to_owned(),
                zone,
                value,
                unit: spec.kind.unit().ucum,
                unit_symbol: spec.kind.unit().symbol,
                voxels,
            });
        };
        for segment in &spec.segments {
            let m = get(segment);
            let inside = |i: usize| m.is_some_and(|m| m[i] != 0);
            push(&mut out, segment, None, measure(&inside, 0..n));
            if spec.zones {
                let counts: Vec<u64> = (0..shape[0])
                    .map(|s| m.map_or(0, |m| m[s * plane..(s + 1) * plane].iter().filter(|&&v| v != 0).count() as u64))
                    .collect();
                for (level, slices) in crate::thirds_of_counts(&counts) {
                    let range = slices.map_or(0..0, |r| r.start * plane..r.end * plane);
                    push(&mut out, segment, Some(level), measure(&inside, range));
                }
            }
        }
        if let Some(name) = &spec.combined {
            let masks: Vec<&[u8]> = spec.segments.iter().filter_map(|s| get(s)).collect();
            let inside = |i: usize| masks.iter().any(|m| m[i] != 0);
            push(&mut out, name, None, measure(&inside, 0..n));
        }
    }
    for spec in classifications {
        let value = out.value(&spec.measurement, &spec.region);
        out.classifications.push(classify(spec, value));
    }
    out
}

/// The class of `value` and the other classes within the spec's error of it.
pub fn classify(spec: &ClassificationSpec, value: Option<f64>) -> Classification {
    let band_of = |v: f64| spec.bands.iter().find(|b| b.below.is_none_or(|below| v < below));
    let class = value.and_then(band_of).cloned();
    let mut possible = Vec::new();
    if let (Some(v), Some(c)) = (value, &class) {
        for end in [v - spec.absolute_error, v + spec.absolute_error] {
            if let Some(b) = band_of(end) {
                if b.value != c.value && !possible.iter().any(|p: &Band| p.value == b.value) {
                    possible.push(b.clone());
                }
            }
        }
    }
    Classification {
        key: spec.key.clone(),
        label: spec.label.clone(),
        measurement: spec.measurement.clone(),
        region: spec.region.clone(),
        value,
        class,
        possible,
        source: spec.source.clone(),
    }
}

/// One spec over the voxels `i` in `range` with `inside(i)`: (value, voxels).
fn measure_region(
    hu: &[f32],
    inside: &dyn Fn(usize) -> bool,
    range: std::ops::Range<usize>,
    spec: &MeasurementSpec,
    part: Option<&[u8]>,
    voxel_ml: f64,
) -> (Option<f64>, u64) {
    let mut voxels = 0u64;
    let mut count = 0u64;
    let mut sum = 0.0f64;
    // HU histogram in 1 HU bins over [-1024, 3071] for percentiles
    let mut histogram = if spec.kind == Kind::HuPercentile { vec![0u64; 4096] } else { Vec::new() };
    let threshold = spec.hu.unwrap_or(0.0);
    for i in range {
        if !inside(i) {
            continue;
        }
        voxels += 1;
        let v = hu[i];
        match spec.kind {
            Kind::Volume => {}
            Kind::PercentWithin => count += u64::from(part.is_some_and(|p| p[i] != 0)),
            Kind::HuMean => sum += f64::from(v),
            Kind::HuPercentile => histogram[(v.round().clamp(-1024.0, 3071.0) + 1024.0) as usize] += 1,
            Kind::PercentAtOrBelow => count += u64::from(f64::from(v) <= threshold),
            Kind::PercentAbove => count += u64::from(f64::from(v) > threshold),
        }
    }
    if voxels == 0 {
        return (if spec.kind == Kind::Volume { Some(0.0) } else { None }, 0);
    }
    let share = 100.0 * count as f64 / voxels as f64;
    let value = match spec.kind {
        Kind::Volume => voxels as f64 * voxel_ml,
        Kind::PercentWithin | Kind::PercentAtOrBelow | Kind::PercentAbove => share,
        Kind::HuMean => sum / voxels as f64,
        Kind::HuPercentile => {
            // nearest rank: the smallest value with at least p % of the voxels at or below it
            let rank = ((spec.percentile.unwrap_or(50.0) / 100.0) * voxels as f64).ceil().max(1.0) as u64;
            let mut seen = 0u64;
            let bin = histogram.iter().position(|&c| {
                seen += c;
                seen >= rank
            });
            bin.map_or(3071.0, |b| b as f64 - 1024.0)
        }
    };
    (Some(value), voxels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(v: &str) -> CodeSpec {
        CodeSpec { scheme: "99FIRSTREAD".into(), value: v.into(), meaning: v.into() }
    }

    fn spec(key: &str, kind: Kind) -> MeasurementSpec {
        MeasurementSpec {
            key: key.into(),
            kind,
            segments: vec!["left".into(), "right".into()],
            combined: Some("both".into()),
            combined_code: None,
            zones: false,
            part: None,
            hu: None,
            percentile: None,
            label: key.into(),
            code: code(key),
            description: None,
        }
    }

    fn bands() -> ClassificationSpec {
        let band = |below: Option<f64>, v: &str, abnormal| Band {
            below,
            value: v.into(),
            label: v.into(),
            code: code(v),
            abnormal,
        };
        ClassificationSpec {
            key: "c".into(),
            label: "C".into(),
            measurement: "laa".into(),
            region: "both".into(),
            absolute_error: 1.0,
            code: code("c"),
            source: None,
            bands: vec![band(Some(5.0), "none", false), band(Some(15.0), "mild", true), band(None, "marked", true)],
        }
    }

    /// 3 slices of 2 x 2; left = columns 0, right = column 1.
    fn volume() -> (Vec<f32>, Vec<u8>, Vec<u8>) {
        let hu = vec![-1000.0, -900.0, -960.0, -800.0, -950.0, -850.0, -700.0, 40.0, -1000.0, -990.0, -920.0, -949.0];
        let left: Vec<u8> = (0..12).map(|i| u8::from(i % 2 == 0)).collect();
        let right: Vec<u8> = (0..12).map(|i| u8::from(i % 2 == 1)).collect();
        (hu, left, right)
    }

    #[test]
    fn each_kind_over_segments_union_and_zones() {
        let (hu, left, right) = volume();
        let opacity: Vec<u8> = hu.iter().map(|&v| u8::from(v > -700.0)).collect();
        let mask = |name: &str| match name {
            "left" => Some(left.as_slice()),
            "right" => Some(right.as_slice()),
            "opacity" => Some(opacity.as_slice()),
            _ => None,
        };
        let mut laa = spec("laa", Kind::PercentAtOrBelow);
        laa.hu = Some(-950.0);
        laa.zones = true;
        let mut pd = spec("pd50", Kind::HuPercentile);
        pd.percentile = Some(50.0);
        let mut within = spec("opacity", Kind::PercentWithin);
        within.part = Some("opacity".into());
        let specs = [spec("volume", Kind::Volume), laa, pd, spec("mean", Kind::HuMean), within];
        let m = compute(&hu, [3, 2, 2], [2.0, 10.0, 5.0], &mask, &specs, &[bands()]);
        // voxel 0.1 mL; left = -1000, -960, -950, -700, -1000, -920
        assert_eq!(m.value("volume", "left"), Some(6.0 * 0.1));
        assert_eq!(m.value("volume", "both"), Some(12.0 * 0.1));
        // at or below -950: left -1000, -960, -950, -1000 = 4 of 6; right -990 = 1 of 6
        assert_eq!(m.value("laa", "left"), Some(100.0 * 4.0 / 6.0));
        assert_eq!(m.value("laa", "right"), Some(100.0 / 6.0));
        assert_eq!(m.value("laa", "both"), Some(100.0 * 5.0 / 12.0));
        // zones: one slice each (two voxels a slice); slice 0 is the lowest
        let zone =
            |level| m.measurements.iter().find(|x| x.key == "laa" && x.region == "left" && x.zone == Some(level));
        assert_eq!(zone(Level::Lower).and_then(|x| x.value), Some(100.0));
        assert_eq!(zone(Level::Middle).and_then(|x| x.value), Some(50.0));
        assert_eq!(zone(Level::Upper).and_then(|x| x.value), Some(50.0));
        // median of the left lung's sorted -1000 -1000 -960 -950 -920 -700: rank 3 = -960
        assert_eq!(m.value("pd50", "left"), Some(-960.0));
        assert_eq!(m.value("mean", "right"), Some((-900.0 - 800.0 - 850.0 + 40.0 - 990.0 - 949.0) / 6.0));
        // the right lung's 40 HU voxel is its only opacity
        assert_eq!(m.value("opacity", "right"), Some(100.0 / 6.0));
        // 41.7 % -> "marked", nothing else within 1 point
        let c = &m.classifications[0];
        assert_eq!((c.class.as_ref().map(|b| b.value.as_str()), c.possible.len()), (Some("marked"), 0));
    }

    #[test]
    fn a_value_within_the_error_of_a_bound_says_the_other_class() {
        let spec = bands();
        let c = classify(&spec, Some(4.3));
        assert_eq!(c.class.as_ref().map(|b| b.value.as_str()), Some("none"));
        assert_eq!(c.possible.iter().map(|b| b.value.as_str()).collect::<Vec<_>>(), ["mild"]);
        assert!(c.abnormal());
        assert_eq!(c.text(), "C: none, possibly mild");
        let c = classify(&spec, Some(3.9));
        assert!(c.possible.is_empty() && !c.abnormal());
        let c = classify(&spec, Some(15.0));
        assert_eq!(c.class.as_ref().map(|b| b.value.as_str()), Some("marked"));
        assert_eq!(c.possible.iter().map(|b| b.value.as_str()).collect::<Vec<_>>(), ["mild"]);
        let c = classify(&spec, None);
        assert!(c.class.is_none() && c.text().contains("not classified"));
    }

    #[test]
    fn empty_regions_have_no_value_but_zero_volume() {
        let hu = vec![-900.0f32; 4];
        let none = |_: &str| None;
        let mut laa = spec("laa", Kind::PercentAtOrBelow);
        laa.hu = Some(-950.0);
        let m = compute(&hu, [1, 2, 2], [1.0; 3], &none, &[spec("volume", Kind::Volume), laa], &[]);
        assert_eq!(m.value("volume", "left"), Some(0.0));
        assert_eq!(m.value("laa", "left"), None);
        assert!(m
            .measurements
            .iter()
            .find(|x| x.key == "laa")
            .is_some_and(|x| x.text("left lung").contains("not measured")));
    }

    #[test]
    fn invalid_specs_are_refused_with_their_name() {
        let outputs = ["left", "right", "opacity"];
        let mut laa = spec("laa", Kind::PercentAtOrBelow);
        assert!(validate(std::slice::from_ref(&laa), &[], &outputs)
            .is_err_and(|e| e.contains("\"laa\"") && e.contains("hu")));
        laa.hu = Some(-950.0);
        assert_eq!(validate(std::slice::from_ref(&laa), &[bands()], &outputs), Ok(()));
        let mut bad = laa.clone();
        bad.segments.push("liver".into());
        assert!(validate(&[bad], &[], &outputs).is_err_and(|e| e.contains("liver")));
        let mut c = bands();
        c.bands.swap(0, 1);
        assert!(validate(std::slice::from_ref(&laa), &[c], &outputs).is_err());
        let mut c = bands();
        c.region = "elsewhere".into();
        assert!(validate(&[laa.clone()], &[c], &outputs).is_err_and(|e| e.contains("elsewhere")));
        assert!(validate(&[laa.clone(), laa], &[], &outputs).is_err_and(|e| e.contains("twice")));
    }
}
