//! The first read as `firstread demo` prints it.

use super::*;

/// Maximum of the CT severity score (Francone 2020: 6 zones x 0-5).
pub const SEVERITY_SCORE_MAX: u8 = 30;

/// Lung volume, opacity volume and involvement (the findings' JSON names carry the units).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Involvement {
    /// Lung volume (mL).
    pub lung_ml: f64,
    /// Opacity volume inside the lung (mL).
    pub opacity_ml: f64,
    /// Opacity / lung volume (%).
    pub involvement_pct: f64,
}

/// One lung.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LungRead {
    /// "left" or "right" (the patient's).
    pub side: String,
    /// Its volumes.
    #[serde(flatten)]
    pub involvement: Involvement,
}

/// The range the method's error allows (`firstread_findings::Uncertainty` as recorded).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UncertaintyRead {
    /// Lowest and highest total involvement (%).
    pub involvement_pct: [f64; 2],
    /// The extent classes (JSON names) of those ends.
    pub extent_class: [String; 2],
    /// Lowest and highest CT severity score.
    pub severity_score: [u8; 2],
}

/// One of the six zones (upper, middle, lower third of each lung).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ZoneRead {
    /// "left" or "right".
    pub side: String,
    /// "upper", "middle" or "lower".
    pub level: String,
    /// Its volumes.
    #[serde(flatten)]
    pub involvement: Involvement,
    /// Zone score 0-5 (Francone 2020).
    pub score: u8,
}

/// The first read as the analysis job recorded it (`result.findings`), the parts printed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FirstRead {
    /// Left then right lung.
    pub lungs: Vec<LungRead>,
    /// Both lungs.
    pub total: Involvement,
    /// Six zones.
    pub zones: Vec<ZoneRead>,
    /// CT severity score, 0-30 (sum of the zone scores).
    pub severity_score: u8,
    /// SFR extent class (snake_case name, e.g. "none_or_minimal").
    pub extent_class: String,
    /// What the method's validated error allows (`firstread_findings::Uncertainty`); absent
    /// from results of before it was reported.
    #[serde(default)]
    pub uncertainty: Option<UncertaintyRead>,
    /// Suggested RSNA category (e.g. "indeterminate").
    pub pattern: String,
    /// Why that category.
    pub pattern_rationale: String,
    /// Pleural effusion per side (empty: the pleural cavity was not assessed).
    #[serde(default)]
    pub effusions: Vec<Effusion>,
    /// Indeterminate dense dependent region per side.
    #[serde(default)]
    pub indeterminate_dense: Vec<IndeterminateDense>,
    /// Dense focal lesions, largest first.
    #[serde(default)]
    pub focal_lesions: Vec<FocalLesion>,
    /// What the reader must know about this result.
    #[serde(default)]
    pub cautions: Vec<String>,
}

/// Everything `firstread demo` reports (`--json` prints it as one object).
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Study Instance UID of the sample.
    pub study_instance_uid: String,
    /// Study version analysed.
    pub study_version: i32,
    /// The model package: name, version, kind.
    pub model: Value,
    /// Measurements; names carry their units (see `units`).
    pub first_read: FirstRead,
    /// Maximum of `first_read.severity_score`.
    pub severity_score_max: u8,
    /// Display name of the extent class.
    pub extent_class_label: String,
    /// Display name of the suggested RSNA category.
    pub pattern_label: String,
    /// Unit of each measurement name suffix.
    pub units: BTreeMap<&'static str, &'static str>,
    /// Instances sent by the SCU.
    pub instances_sent: usize,
    /// From the association request to the last C-STORE-RSP (s).
    pub send_s: f64,
    /// The node's `stable_after` (s).
    pub stable_after_s: f64,
    /// Last C-STORE-RSP -> SR acknowledged by the receiving AE (s).
    pub time_to_result_s: f64,
    /// That time split into stages (s).
    pub stages: Stages,
    /// Result objects acknowledged by the receiving AE, SR first.
    pub received: Vec<DeliveredObject>,
    /// The receiving AE's AE title.
    pub received_by: String,
    /// Output folder.
    pub output_folder: PathBuf,
    /// The analysis job's full result (JSON).
    pub result_json: PathBuf,
    /// The temporary database (dropped).
    pub database: String,
}

impl DemoReport {
    /// The human-readable first read.
    pub fn render(&self) -> String {
        let f = &self.first_read;
        let mut o = String::new();
        let name = |v: &Value, k: &str| v[k].as_str().unwrap_or("?").to_owned();
        let _ = writeln!(
            o,
            "\nFIRST READ  (model {} {}, {}; a pre-read aid, not a diagnosis)",
            name(&self.model, "name"),
            name(&self.model, "version"),
            name(&self.model, "kind")
        );
        let _ = writeln!(o, "  study {} (version {})", self.study_instance_uid, self.study_version);
        let _ = writeln!(o, "  {:<12} {:>10} {:>12} {:>12}", "", "lung", "opacity", "involvement");
        let mut lungs: Vec<&LungRead> = f.lungs.iter().collect();
        lungs.sort_by_key(|l| l.side != "right");
        for l in lungs {
            let _ = writeln!(o, "  {:<12} {}", format!("{} lung", l.side), involvement_row(&l.involvement));
        }
        let _ = writeln!(o, "  {:<12} {}", "both lungs", involvement_row(&f.total));
        let _ = writeln!(o, "  zones: opacity % of the zone (score 0-5)");
        let _ = writeln!(o, "  {:<12} {:>12} {:>12}", "", "right", "left");
        for level in ["upper", "middle", "lower"] {
            let cell = |side: &str| {
                f.zones
                    .iter()
                    .find(|z| z.side == side && z.level == level)
                    .map(|z| format!("{:.1} % ({})", z.involvement.involvement_pct, z.score))
                    .unwrap_or_else(|| "-".into())
            };
            let _ = writeln!(o, "  {:<12} {:>12} {:>12}", level, cell("right"), cell("left"));
        }
        let label = |t: vocabulary::Term| format!("{:<19}", t.label);
        let (mut score_range, mut other_classes) = (String::new(), String::new());
        if let Some(u) = &f.uncertainty {
            let [lo, hi] = u.severity_score;
            if lo != hi {
                score_range = format!(", {lo}-{hi} {}", vocabulary::UNCERTAINTY.label);
            }
            if u.extent_class[0] != u.extent_class[1] {
                other_classes = format!(
                    "; {}: {} to {}",
                    vocabulary::UNCERTAINTY.label,
                    extent_label(&u.extent_class[0]),
                    extent_label(&u.extent_class[1])
                );
            }
        }
        let _ = writeln!(
            o,
            "  {} {}/{} (Francone 2020{score_range})",
            label(vocabulary::SEVERITY_SCORE),
            f.severity_score,
            self.severity_score_max
        );
        let _ = writeln!(o, "  {} {} (SFR){other_classes}", label(vocabulary::EXTENT_CLASS), self.extent_class_label);
        let _ = writeln!(
            o,
            "  {} {} (RSNA): {}",
            label(vocabulary::RSNA_SUGGESTION),
            self.pattern_label,
            f.pattern_rationale
        );
        for line in other_findings(f) {
            let _ = writeln!(o, "  {line}");
        }
        let _ = writeln!(
            o,
            "\nLast C-STORE-RSP to the SR acknowledged by {}: {:.2} s (stable_after {} s)",
            self.received_by, self.time_to_result_s, self.stable_after_s
        );
        let stages: Vec<String> = self.stages.named().iter().map(|(name, s)| format!("{name} {:.2} s", s)).collect();
        let _ = writeln!(o, "  {}", stages.join(", "));
        let _ = writeln!(
            o,
            "\n{} result objects acknowledged by {}, written to {}/:",
            self.received.len(),
            self.received_by,
            self.output_folder.display()
        );
        for r in &self.received {
            let file = r.path.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
            let _ = writeln!(
                o,
                "  {:<4} {:<40} +{:.2} s  {}",
                r.kind,
                r.sop_class,
                r.acknowledged_after_s,
                file.unwrap_or_default()
            );
        }
        let _ = writeln!(o, "Full result: {}", self.result_json.display());
        o
    }
}

/// The pleural effusions, dense dependent regions and focal lesions, one display text per line
/// (the texts `firstread_findings::vocabulary` wrote into the findings), under "other findings".
fn other_findings(f: &FirstRead) -> Vec<String> {
    let mut texts: Vec<String> =
        f.cautions.iter().map(|c| format!("{}: {c}", vocabulary::CAUTION.label.to_uppercase())).collect();
    texts.extend(f.effusions.iter().map(|e| e.text.clone()));
    texts.extend(f.indeterminate_dense.iter().map(|d| vocabulary::sided(d.side, &d.text)));
    texts.extend(f.focal_lesions.iter().map(|l| {
        format!(
            "{} ({} {:.0} mm, {} {:.0} mm, {} {:.0} HU)",
            l.text,
            vocabulary::EQUIVALENT_DIAMETER.label,
            l.equivalent_diameter_mm,
            vocabulary::MAX_INPLANE_DIAMETER.label,
            l.max_inplane_diameter_mm,
            vocabulary::MEAN_ATTENUATION.label,
            l.mean_hu
        )
    }));
    texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| format!("{:<20}{t}", if i == 0 { "other findings" } else { "" }))
        .collect()
}

fn involvement_row(i: &Involvement) -> String {
    format!("{:>7.0} mL {:>9.1} mL {:>10.1} %", i.lung_ml, i.opacity_ml, i.involvement_pct)
}

/// Display name of an extent class by its JSON name (as `firstread-findings` writes it).
pub(super) fn extent_label(json_name: &str) -> String {
    ExtentClass::from_name(json_name).map_or_else(|| json_name.replace('_', " "), |c| c.label().to_owned())
}

/// Display name of an RSNA category by its JSON name.
pub(super) fn pattern_label(json_name: &str) -> String {
    let patterns = [Pattern::Typical, Pattern::Indeterminate, Pattern::Atypical, Pattern::Negative];
    patterns
        .into_iter()
        .find(|p| serde_json::to_value(p).ok().as_ref().and_then(Value::as_str) == Some(json_name))
        .map(|p| p.label().to_owned())
        .unwrap_or_else(|| json_name.replace('_', " "))
}

/// Unit of each measurement name suffix in [`DemoReport`].
pub(super) fn units() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("*_ml", "millilitre (mL)"),
        ("*_pct", "percent of the lung or zone volume"),
        ("*_s", "second"),
        ("*_mm", "millimetre"),
        ("*_hu", "Hounsfield unit (HU)"),
        ("severity_score", "points, 0-30 (sum of six zone scores 0-5)"),
        ("score", "points, 0-5 per zone"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_the_findings_crate() {
        assert_eq!(extent_label("none_or_minimal"), ExtentClass::NoneOrMinimal.label());
        assert_eq!(extent_label("critical"), ExtentClass::Critical.label());
        assert_eq!(pattern_label("indeterminate"), Pattern::Indeterminate.label());
        assert_eq!(pattern_label("negative"), Pattern::Negative.label());
        assert_eq!(pattern_label("new_kind"), "new kind");
    }

    #[test]
    fn the_report_renders_every_lung_zone_and_score() {
        let mut zones = Vec::new();
        for side in ["left", "right"] {
            for level in ["upper", "middle", "lower"] {
                let hit = side == "right" && level == "middle";
                zones.push(serde_json::json!({ "side": side, "level": level, "lung_ml": 700.0, "opacity_ml": 7.0,
                    "involvement_pct": if hit { 6.3 } else { 0.0 }, "score": if hit { 2 } else { 0 } }));
            }
        }
        let findings = serde_json::json!({
            "lungs": [
                { "side": "left", "lung_ml": 2100.4, "opacity_ml": 1.24, "involvement_pct": 0.06, "opacity_mean_hu": -400.0 },
                { "side": "right", "lung_ml": 2300.0, "opacity_ml": 35.0, "involvement_pct": 1.52 },
            ],
            "total": { "lung_ml": 4400.4, "opacity_ml": 36.25, "involvement_pct": 0.82 },
            "zones": zones,
            "severity_score": 2,
            "extent_class": "none_or_minimal",
            "pattern": "atypical",
            "pattern_rationale": "a solitary dense opacity",
            "key_slices": [],
            "effusions": [
                { "side": "left", "volume_ml": 0.0, "mean_hu": null, "craniocaudal_extent_mm": 0.0, "slice_extent": null,
                  "text": "left pleural effusion: none" },
                { "side": "right", "volume_ml": 120.5, "mean_hu": 12.0, "craniocaudal_extent_mm": 85.0,
                  "slice_extent": [2, 19], "text": "right pleural effusion, 120.5 mL, mean 12 HU, cranio-caudal extent 85 mm" },
            ],
            "indeterminate_dense": [{ "side": "right", "volume_ml": 12.0,
                "text": "dense dependent region: effusion or consolidation, 12.0 mL (counted as opacity)" }],
            "focal_lesions": [{ "side": "right", "level": "middle", "volume_ml": 35.0, "equivalent_diameter_mm": 40.6,
                "max_inplane_diameter_mm": 48.2, "mean_hu": 21.0, "centroid_slice": 12,
                "text": "focal opacity, 35.0 mL, right middle zone; not typical of pneumonia" }],
            "non_focal_involvement_pct": 0.02,
            "uncertainty": { "involvement_pct": [0.0, 0.96], "extent_class": ["none_or_minimal", "none_or_minimal"],
                "severity_score": [1, 2] },
        });
        let first_read: FirstRead = serde_json::from_value(findings).expect("findings parse");
        assert_eq!(first_read.lungs[0].involvement.lung_ml, 2100.4);
        let report = DemoReport {
            study_instance_uid: "1.2.3".into(),
            study_version: 1,
            model: serde_json::json!({ "name": "m", "version": "0.1.0", "kind": "rule-based" }),
            extent_class_label: extent_label(&first_read.extent_class),
            pattern_label: pattern_label(&first_read.pattern),
            first_read,
            severity_score_max: SEVERITY_SCORE_MAX,
            units: units(),
            instances_sent: 30,
            send_s: 0.4,
            stable_after_s: 1.0,
            time_to_result_s: 2.13,
            stages: Stages { total_s: 2.13, stability_wait_s: 0.99, ..Stages::default() },
            received: vec![DeliveredObject {
                kind: "SR",
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.88.34".into(),
                sop_class: "Comprehensive 3D SR Storage".into(),
                sop_instance_uid: "2.25.1".into(),
                path: Some("out/SR-2.25.1.dcm".into()),
                acknowledged_after_s: 2.13,
            }],
            received_by: DEMO_AE_TITLE.into(),
            output_folder: "out".into(),
            result_json: "out/first-read.json".into(),
            database: "firstread_demo_x".into(),
        };
        let text = report.render();
        assert!(text.contains("right lung      2300 mL      35.0 mL        1.5 %"), "{text}");
        assert!(text.contains("left lung       2100 mL       1.2 mL        0.1 %"), "{text}");
        assert!(text.contains("  middle          6.3 % (2)    0.0 % (0)\n"), "{text}");
        assert!(text.contains("CT severity score   2/30 (Francone 2020, 1-2 within the method's error)"), "{text}");
        assert!(text.contains("none or minimal (<10 %) (SFR)\n"), "{text}");
        assert!(text.contains("atypical appearance (RSNA): a solitary dense opacity"), "{text}");
        assert!(
            text.contains(
                "  other findings      left pleural effusion: none\n                      right pleural effusion, 120.5 mL, \
                 mean 12 HU, cranio-caudal extent 85 mm\n                      right dense dependent region: effusion or \
                 consolidation, 12.0 mL (counted as opacity)\n                      focal opacity, 35.0 mL, right middle \
                 zone; not typical of pneumonia (equivalent diameter 41 mm, max in-plane diameter 48 mm, mean 21 HU)\n"
            ),
            "{text}"
        );
        assert!(text.contains("acknowledged by DEMO_CT: 2.13 s (stable_after 1 s)"), "{text}");
        assert!(text.contains("SR-2.25.1.dcm"), "{text}");
        let json: Value = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["first_read"]["lungs"][1]["opacity_ml"], 35.0);
        assert_eq!(json["first_read"]["focal_lesions"][0]["level"], "middle");
        // a result of a model without the new findings still parses
        let old: FirstRead = serde_json::from_value(serde_json::json!({
            "lungs": [], "total": { "lung_ml": 1.0, "opacity_ml": 0.0, "involvement_pct": 0.0 }, "zones": [],
            "severity_score": 0, "extent_class": "none_or_minimal", "pattern": "negative", "pattern_rationale": "",
        }))
        .expect("old findings parse");
        assert!(other_findings(&old).is_empty());
        assert_eq!(json["stages"]["stability_wait_s"], 0.99);
    }
}
