//! The second pathology, `models/emphysema-ct/0.1.0`: a package that is a folder (a manifest and the
//! lung TorchScript of covid19-lung-ct), computed by the node's measurement vocabulary
//! (`firstread_findings::measures`) through the production pipeline (`analysis::read_volume`).
//!
//! - Chest phantoms (`tests/src/phantom.rs`) with low-attenuation clusters written into the aerated
//!   lung (2-5 mm spheres at -985 HU with the phantom's noise): %LAA-950 of each lung and both
//!   lungs within 1 percentage point of the truth counted from the voxels, zones and PD15 close,
//!   the class and the classes within the error right.
//! - The real sample, soft (B40f) and sharp (B70f) kernel: the sharp one is smoothed first and
//!   both read alike.
//! - The result objects of the sample (both SRs and the SEG with the derived low-attenuation
//!   segment) are dciodvfy-clean and say the values.

use std::path::Path;
use std::sync::Mutex;

use firstread::analysis::{read_volume, Read};
use firstread_e2e::phantom::{label, thorax, Thorax, ThoraxSpec};
use firstread_e2e::repo_root;
use firstread_findings::Level;
use firstread_inference::Model;

fn package() -> std::path::PathBuf {
    repo_root().join("models/emphysema-ct/0.1.0")
}

fn model() -> Mutex<Model> {
    Mutex::new(Model::load(&package()).expect("emphysema package loads"))
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn gauss(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-12), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// The voxel's side index when it is aerated lung (not vessel, not opacity).
fn aerated(t: &Thorax, i: usize) -> Option<usize> {
    label::split(t.labels[i]).filter(|&(class, _)| class == label::AIR).map(|(_, side)| side)
}

/// Writes 2-5 mm spheres of -985 HU (the phantom's 12 HU noise) into aerated lung until
/// `target_pct` of the lungs is at or below -950 HU; with `upper`, more of them the higher in the
/// lungs (a sphere's chance rises with the square of its height in the lungs' extent:
/// centrilobular emphysema is upper-zone predominant).
fn write_emphysema(t: &mut Thorax, target_pct: f64, upper: bool, seed: u64) {
    let lung: Vec<usize> = (0..t.hu.len()).filter(|&i| aerated(t, i).is_some()).collect();
    let total = (t.truth.lung[0] + t.truth.lung[1]) as f64;
    let (k_min, k_max) = lung.iter().fold((usize::MAX, 0), |(a, b), &i| {
        let k = i / (t.shape[1] * t.shape[2]);
        (a.min(k), b.max(k))
    });
    let height = |k: usize| (k.saturating_sub(k_min)) as f64 / (k_max - k_min).max(1) as f64;
    let mut rng = Rng(seed | 1);
    let [sk, sr, sc] = t.spacing;
    let mut low = t.hu.iter().enumerate().filter(|&(i, &v)| v <= -950.0 && lung_truth(t, i).is_some()).count();
    let mut guard = 0;
    while (low as f64) < target_pct / 100.0 * total && guard < 100_000 {
        guard += 1;
        let centre = lung[(rng.uniform() * lung.len() as f64) as usize % lung.len()];
        let [k0, r0, c0] = [centre / (t.shape[1] * t.shape[2]), centre / t.shape[2] % t.shape[1], centre % t.shape[2]];
        if upper && rng.uniform() > height(k0).powi(2) {
            continue;
        }
        let radius = 2.0 + 3.0 * rng.uniform();
        let reach = |s: f64| (radius / s).ceil() as isize;
        for dk in -reach(sk)..=reach(sk) {
            for dr in -reach(sr)..=reach(sr) {
                for dc in -reach(sc)..=reach(sc) {
                    let d2 = (dk as f64 * sk).powi(2) + (dr as f64 * sr).powi(2) + (dc as f64 * sc).powi(2);
                    let (k, r, c) = (k0 as isize + dk, r0 as isize + dr, c0 as isize + dc);
                    if d2 > radius * radius || k < 0 || r < 0 || c < 0 {
                        continue;
                    }
                    let (k, r, c) = (k as usize, r as usize, c as usize);
                    if k >= t.shape[0] || r >= t.shape[1] || c >= t.shape[2] {
                        continue;
                    }
                    let i = t.index(k, r, c);
                    if aerated(t, i).is_some() && t.hu[i] > -950.0 {
                        t.hu[i] = (-985.0 + 12.0 * rng.gauss()).max(-1024.0) as f32;
                        low += usize::from(t.hu[i] <= -950.0);
                    }
                }
            }
        }
    }
}

/// The truth lung side of voxel `i`.
fn lung_truth(t: &Thorax, i: usize) -> Option<usize> {
    (0..2).find(|&s| t.truth.lung_mask[s][i] != 0)
}

/// Truth %LAA-950 of `[left, right, both]`, per third of each lung's volume
/// (`[side][upper, middle, lower]`), and PD15 of both lungs.
struct Truth {
    laa: [f64; 3],
    zones: [[f64; 3]; 2],
    pd15: f64,
}

fn truth(t: &Thorax) -> Truth {
    let plane = t.shape[1] * t.shape[2];
    let mut n = [0usize; 2];
    let mut low = [0usize; 2];
    let mut per_slice = vec![[[0usize; 2]; 2]; t.shape[0]];
    let mut values = Vec::new();
    for i in 0..t.hu.len() {
        let Some(s) = lung_truth(t, i) else { continue };
        let is_low = t.hu[i] <= -950.0;
        n[s] += 1;
        low[s] += usize::from(is_low);
        per_slice[i / plane][s][0] += 1;
        per_slice[i / plane][s][1] += usize::from(is_low);
        values.push(t.hu[i]);
    }
    values.sort_by(f32::total_cmp);
    let rank = ((0.15 * values.len() as f64).ceil() as usize).max(1) - 1;
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    let mut zones = [[0.0; 3]; 2];
    for (s, zone) in zones.iter_mut().enumerate() {
        // thirds of the volume from the base up, each cut at the slice boundary nearest a third
        // of the voxels (the vocabulary's rule), on the truth lung
        let counts: Vec<usize> = per_slice.iter().map(|p| p[s][0]).collect();
        let total: usize = counts.iter().sum();
        let cut = |share: f64| {
            let mut below = 0usize;
            let mut best = (0usize, f64::MAX);
            for k in 0..=counts.len() {
                let d = (below as f64 - share * total as f64).abs();
                if d < best.1 {
                    best = (k, d);
                }
                below += counts.get(k).copied().unwrap_or(0);
            }
            best.0
        };
        let (a, b) = (cut(1.0 / 3.0), cut(2.0 / 3.0));
        for (z, range) in [(0, b..t.shape[0]), (1, a..b), (2, 0..a)] {
            let (nn, ll) = per_slice[range].iter().fold((0, 0), |(x, y), p| (x + p[s][0], y + p[s][1]));
            zone[z] = pct(ll, nn);
        }
    }
    Truth {
        laa: [pct(low[0], n[0]), pct(low[1], n[1]), pct(low[0] + low[1], n[0] + n[1])],
        zones,
        pd15: f64::from(values.get(rank).copied().unwrap_or(0.0)).round(),
    }
}

fn value(r: &Read, key: &str, region: &str) -> f64 {
    r.measures.value(key, region).unwrap_or_else(|| panic!("{key} of {region} measured"))
}

fn zone(r: &Read, region: &str, level: Level) -> f64 {
    r.measures
        .measurements
        .iter()
        .find(|m| m.key == "laa_950" && m.region == region && m.zone == Some(level))
        .and_then(|m| m.value)
        .unwrap_or_else(|| panic!("{region} {level:?} measured"))
}

#[test]
fn low_attenuation_phantoms_read_within_one_point() {
    let model = model();
    let manifest = model.lock().expect("model").manifest.clone();
    assert!(manifest.extension.is_none(), "the vocabulary alone: no extension");
    let base = thorax(&ThoraxSpec::standard([64, 240, 240], [5.0, 1.5, 1.5]));
    // (case, %LAA-950 written, upper half only, class, class within the error)
    let cases: [(&str, f64, bool, &str, Option<&str>); 4] = [
        ("healthy", 0.0, false, "none", None),
        ("mild, diffuse", 3.0, false, "none", None),
        ("emphysema, diffuse", 9.0, false, "emphysema", None),
        ("emphysema, upper zones", 18.0, true, "emphysema", None),
    ];
    let mut failures = Vec::new();
    for (i, (case, target, upper, class, possible)) in cases.into_iter().enumerate() {
        let mut t = base.clone();
        write_emphysema(&mut t, target, upper, 0x9E37_79B9 + i as u64);
        let truth = truth(&t);
        let r = read_volume(&model, &manifest, &t.hu, t.shape, t.spacing).expect("pipeline runs");
        assert!(r.findings.is_none(), "no COVID findings from this package");
        let got =
            [value(&r, "laa_950", "left_lung"), value(&r, "laa_950", "right_lung"), value(&r, "laa_950", "both_lungs")];
        let pd15 = value(&r, "pd15", "both_lungs");
        eprintln!(
            "| {case} | left {:.2} / {:.2} | right {:.2} / {:.2} | both {:.2} / {:.2} | PD15 {pd15:.0} / {:.0} HU | {} |",
            got[0],
            truth.laa[0],
            got[1],
            truth.laa[1],
            got[2],
            truth.laa[2],
            truth.pd15,
            r.measures.summary_text()
        );
        for (s, region) in [(0, "left_lung"), (1, "right_lung")] {
            let zones = [Level::Upper, Level::Middle, Level::Lower].map(|l| zone(&r, region, l));
            eprintln!(
                "|   {region} zones upper/middle/lower | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
                zones[0], truth.zones[s][0], zones[1], truth.zones[s][1], zones[2], truth.zones[s][2]
            );
            for (z, (got, want)) in zones.iter().zip(truth.zones[s]).enumerate() {
                if (got - want).abs() > 1.5 {
                    failures.push(format!("{case}: {region} zone {z} {got:.2} vs {want:.2}"));
                }
            }
        }
        for (region, (got, want)) in ["left", "right", "both"].iter().zip(got.iter().zip(truth.laa)) {
            if (got - want).abs() > 1.0 {
                failures.push(format!("{case}: %LAA-950 {region} {got:.2} vs truth {want:.2}"));
            }
        }
        if (pd15 - truth.pd15).abs() > 10.0 {
            failures.push(format!("{case}: PD15 {pd15} vs truth {}", truth.pd15));
        }
        let c = &r.measures.classifications[0];
        let got_class = c.class.as_ref().map(|b| b.value.as_str());
        let got_possible: Vec<&str> = c.possible.iter().map(|b| b.value.as_str()).collect();
        if got_class != Some(class) || got_possible != possible.into_iter().collect::<Vec<_>>() {
            failures.push(format!("{case}: class {got_class:?} possibly {got_possible:?}"));
        }
        // the derived low-attenuation segment is the measured share of the lungs
        let laa_segment = r.segmentation.channels[3].iter().filter(|&&v| v != 0).count() as f64;
        let lungs = r.segmentation.channels[0]
            .iter()
            .zip(&r.segmentation.channels[1])
            .filter(|(a, b)| **a != 0 || **b != 0)
            .count() as f64;
        assert!((100.0 * laa_segment / lungs - got[2]).abs() < 1e-9, "{case}: LAA segment");
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A value within the error of the 5 % bound says both classes.
#[test]
fn a_value_near_the_bound_is_said_to_be_unsure() {
    let model = model();
    let manifest = model.lock().expect("model").manifest.clone();
    let mut t = thorax(&ThoraxSpec::standard([64, 240, 240], [5.0, 1.5, 1.5]));
    write_emphysema(&mut t, 4.6, false, 7);
    let r = read_volume(&model, &manifest, &t.hu, t.shape, t.spacing).expect("pipeline runs");
    let c = &r.measures.classifications[0];
    let both = value(&r, "laa_950", "both_lungs");
    eprintln!("| near the bound | both {both:.2} / {:.2} | {} |", truth(&t).laa[2], c.text());
    assert!((4.0..6.0).contains(&both), "{both}");
    let mut said: Vec<&str> = c.class.iter().chain(&c.possible).map(|b| b.value.as_str()).collect();
    said.sort_unstable();
    assert_eq!(said, ["emphysema", "none"], "{}", c.text());
    assert!(c.abnormal(), "a possible emphysema is flagged");
}

fn dciodvfy(path: &Path) {
    let out = std::process::Command::new("/usr/bin/dciodvfy").arg(path).output().expect("dciodvfy runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("Error")).collect();
    assert!(errors.is_empty(), "dciodvfy errors in {}:\n{}", path.display(), errors.join("\n"));
}

#[test]
fn the_sample_reads_alike_with_both_kernels_and_its_objects_are_valid() {
    let model = model();
    let mut reads = Vec::new();
    for series in ["lung-dx-a0002-b40f", "lung-dx-a0002-b70f"] {
        let outcome = firstread::analysis::Analysis::analyse_files(&model, &firstread_e2e::series_files(series), 0)
            .expect("analysis");
        assert_eq!(outcome.result["status"], "analysed", "{}", outcome.result);
        let analysed = outcome.analysed.expect("analysed");
        let laa = analysed.measures.value("laa_950", "both_lungs").expect("LAA");
        let pd15 = analysed.measures.value("pd15", "both_lungs").expect("PD15");
        let volume = analysed.measures.value("lung_volume", "both_lungs").expect("volume");
        eprintln!(
            "| {series} | lungs {volume:.0} mL | %LAA-950 {laa:.2} | PD15 {pd15:.0} HU | {} |",
            analysed.measures.summary_text()
        );
        // the JSON carries the values with their units
        let json = &outcome.result["measurements"];
        assert!(
            json.as_array().is_some_and(|a| a
                .iter()
                .any(|m| m["key"] == "laa_950" && m["unit"] == "%" && m["region"] == "both_lungs")),
            "{json}"
        );
        assert!(volume > 1000.0, "both lungs {volume} mL");
        reads.push((series, laa, pd15, analysed));
    }
    let (soft, sharp) = (&reads[0], &reads[1]);
    // the sharp kernel is smoothed to the soft one's noise first (manifest: denoise)
    assert!((soft.1 - sharp.1).abs() <= 1.0, "B40f {:.2} vs B70f {:.2} %LAA-950", soft.1, sharp.1);
    assert!((soft.2 - sharp.2).abs() <= 15.0, "PD15 B40f {} vs B70f {}", soft.2, sharp.2);

    // the result objects: SR, volumetric SR, SEG with four segments, one key image
    let root = tempfile::tempdir().expect("tmp");
    let manifest = model.lock().expect("model").manifest.clone();
    let now = chrono::Utc::now();
    let job = firstread_queue::Job {
        id: 1,
        kind: firstread_queue::JobKind::Analysis,
        site: firstread_sites::DEFAULT.into(),
        study_instance_uid: "1.2.826.0.1.3680043.10.1.1".into(),
        study_version: 1,
        model: manifest.name.clone(),
        model_version: manifest.version.clone(),
        shadow: false,
        destination: String::new(),
        payload: serde_json::Value::Null,
        attempt: 1,
        max_attempts: 1,
        started_at: now,
        created_at: now,
    };
    let written =
        firstread::results::write(root.path(), &job, &manifest, &soft.3, None, |_| {}).expect("result objects");
    let modalities: Vec<String> = written.iter().filter_map(|w| w.attributes.modality.clone()).collect();
    assert_eq!(modalities, ["SR", "SR", "SEG", "OT"], "{written:?}");
    for w in &written {
        dciodvfy(&root.path().join(&w.path));
    }
    let sr = root.path().join(&written[0].path);
    let dump = std::process::Command::new("/usr/bin/dsrdump").arg(&sr).output().expect("dsrdump");
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("Emphysema by quantitative CT"), "{text}");
    assert!(text.contains(&format!("{:.1}", soft.1)), "the SR says %LAA-950 {:.1}: {text}", soft.1);
    assert!(text.contains("emphysema-ct 0.1.0"), "{text}");
    let seg = dicom_object::open_file(root.path().join(&written[2].path)).expect("SEG");
    let segments = seg.element(dicom_dictionary_std::tags::SEGMENT_SEQUENCE).expect("segments");
    assert_eq!(segments.items().map(<[_]>::len), Some(4));

    // the key image is the slice with the most low attenuation area and opacity voxels (the
    // non-anatomical segments), ties to the most superior
    let analysed = &soft.3;
    let [slices, rows, cols] = analysed.study.volume.shape;
    let plane = rows * cols;
    let findings: Vec<&Vec<u8>> = ["lung_opacity", "low_attenuation_area"]
        .iter()
        .map(|role| &analysed.segmentation.channels[manifest.channel(role).expect("output")])
        .collect();
    let per_slice: Vec<usize> = (0..slices)
        .map(|k| findings.iter().map(|m| m[k * plane..(k + 1) * plane].iter().filter(|&&x| x != 0).count()).sum())
        .collect();
    let most = per_slice.iter().copied().max().expect("slices");
    assert!(most > 0, "the sample has low attenuation voxels");
    let expected = per_slice.iter().rposition(|&n| n == most).expect("the slice");
    let sc = dicom_object::open_file(root.path().join(&written[3].path)).expect("key image");
    let text = |obj: &dicom_object::DefaultDicomObject, tag| {
        obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim().to_owned()).unwrap_or_default()
    };
    let source = sc.element(dicom_dictionary_std::tags::SOURCE_IMAGE_SEQUENCE).expect("source image");
    let referenced = source.items().and_then(|i| i.first()).expect("one source image");
    let referenced_uid = referenced
        .element(dicom_dictionary_std::tags::REFERENCED_SOP_INSTANCE_UID)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_owned());
    assert_eq!(referenced_uid.as_deref(), Some(analysed.study.volume.slices[expected].sop_instance_uid.as_str()));
    assert!(text(&sc, dicom_dictionary_std::tags::DERIVATION_DESCRIPTION).contains("emphysema-ct 0.1.0"));
    assert_eq!(text(&sc, dicom_dictionary_std::tags::PHOTOMETRIC_INTERPRETATION), "RGB");
    // the legend bands: the title's yellow on the dimmed top band, and the image is not blank
    let pixels = sc.element(dicom_dictionary_std::tags::PIXEL_DATA).expect("pixels").to_bytes().expect("bytes");
    let yellow = pixels.chunks_exact(3).take(cols * 24).filter(|p| p[0] > 200 && p[1] > 150 && p[2] < 60).count();
    assert!(yellow > 50, "the burned-in title: {yellow} yellow pixels in the top band");
}

/// A node with its default configuration runs every installed package: the sample sent with dcmtk
/// storescu gets the COVID-19 read and the emphysema read, each its own SR and SEG series, both
/// exported to the sender's storescp, dciodvfy-clean, each SR naming its model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chest_ct_gets_both_reports_from_a_node_with_both_packages() {
    use firstread_e2e::*;
    let dir = tempfile::tempdir().expect("dir");
    let received_dir = dir.path().join("received");
    std::fs::create_dir_all(&received_dir).expect("dir");
    let scp_port = free_port();
    let _scp = storescp(scp_port, &received_dir);
    let node = TestNode::start(|c| {
        c.assembly.stable_after = std::time::Duration::from_millis(500);
        // the default: every package under models_dir at its highest version
        c.worker.models = None;
        c.export.destinations = vec![firstread_dimse::Destination {
            ae_title: "MODALITY".into(),
            host: "127.0.0.1".into(),
            port: scp_port,
            tls: None,
        }];
    })
    .await;
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "FIRSTREAD", "-aet", "MODALITY", "127.0.0.1", &node.port().to_string()]).args(sample_series(""));
    assert!(run(cmd).status.success(), "sample sent");
    let rows = || async {
        sqlx::query_as::<_, (String, String, String, Option<String>)>(
            "SELECT kind || coalesce(nullif('/' || part, '/'), ''), model, state, result_status FROM jobs \
             WHERE kind IN ('analysis', 'export') ORDER BY kind, model, part",
        )
        .fetch_all(&node.pool)
        .await
        .expect("jobs")
    };
    let settled = eventually_async(std::time::Duration::from_secs(300), || async {
        let r = rows().await;
        r.len() == 6 && r.iter().all(|j| j.2 == "done")
    })
    .await;
    let r = rows().await;
    assert!(settled, "{r:?}");
    assert_eq!(
        r.iter().map(|j| (j.0.as_str(), j.1.as_str(), j.3.as_deref())).collect::<Vec<_>>(),
        [
            ("analysis", "covid19-lung-ct", Some("analysed")),
            ("analysis", "emphysema-ct", Some("analysed")),
            // each read's SR, then its other objects
            ("export/objects", "covid19-lung-ct", None),
            ("export/sr", "covid19-lung-ct", None),
            ("export/objects", "emphysema-ct", None),
            ("export/sr", "emphysema-ct", None),
        ]
    );
    let (laa,): (Option<f64>,) = sqlx::query_as(
        "SELECT (m->>'value')::float8 FROM jobs, jsonb_array_elements(result->'measurements') m \
         WHERE kind = 'analysis' AND model = 'emphysema-ct' AND m->>'key' = 'laa_950' AND m->>'region' = 'both_lungs'",
    )
    .fetch_one(&node.pool)
    .await
    .expect("the emphysema job's %LAA-950");
    // the in-process read of the same files (the other test): 1.23 %
    assert!(laa.is_some_and(|v| (v - 1.23).abs() < 0.01), "{laa:?}");

    // the sender got both result sets: per model an SR series, a volumetric SR, a SEG, key images
    let mut by_model: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for f in files_under(&received_dir) {
        dciodvfy(&f);
        let obj = dicom_object::open_file(&f).expect("received object");
        let text =
            |tag| obj.element(tag).ok().and_then(|e| e.to_multi_str().ok().map(|v| v.to_vec())).unwrap_or_default();
        let modality = text(dicom_dictionary_std::tags::MODALITY).concat();
        let model = text(dicom_dictionary_std::tags::SOFTWARE_VERSIONS)
            .into_iter()
            .find(|v| !v.starts_with("firstread "))
            .unwrap_or_default();
        by_model.entry(model.trim().to_owned()).or_default().push(modality.trim().to_owned());
    }
    for modalities in by_model.values_mut() {
        modalities.sort();
    }
    let emphysema = by_model.get("emphysema-ct 0.1.0").cloned().unwrap_or_default();
    assert_eq!(emphysema, ["OT", "SEG", "SR", "SR"], "{by_model:?}");
    let covid = by_model.get("covid19-lung-ct 0.2.4").cloned().unwrap_or_default();
    assert!(covid.iter().filter(|m| *m == "SR").count() == 2 && covid.contains(&"SEG".to_owned()), "{by_model:?}");
}
