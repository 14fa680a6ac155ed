//! The analysis pipeline (volume -> TorchScript model through libtorch -> findings) on synthetic
//! phantoms and on the real sample CT, and refusals through the job queue.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use firstread::analysis::{read_volume, Analysis};
use firstread_e2e::*;
use firstread_findings::{compute, ExtentClass, Grid, Masks, Pattern, Side};
use firstread_inference::Model;
use firstread_volume::{build_study_volume, VolumeContract};

fn model() -> Model {
    Model::load(&repo_root().join("models/covid19-lung-ct/0.2.4")).expect("model package loads")
}

/// The lung, right lung and opacity masks of the model package's whole pipeline (denoising,
/// TorchScript, pleural cavity: `analysis::read_volume`).
fn masks_of(model: &Mutex<Model>, hu: &[f32], shape: [usize; 3], spacing: [f64; 3]) -> [Vec<u8>; 3] {
    let manifest = model.lock().expect("model").manifest.clone();
    let read = read_volume(model, &manifest, hu, shape, spacing).expect("model runs");
    let ch = |role: &str| read.segmentation.channels[manifest.channel(role).expect("role")].clone();
    [ch("left_lung"), ch("right_lung"), ch("lung_opacity")]
}

fn within(measured: f64, truth: f64, rel: f64) -> bool {
    (measured - truth).abs() <= rel * truth
}

/// A chest phantom at 5 x 1.5 x 1.5 mm: soft-tissue body (40 HU) in air, two lung ellipsoids
/// (-850 HU), a ground-glass sphere (-500 HU) in the left lung and a consolidation sphere (+20 HU)
/// in the right lung. Returns (hu, truth voxel counts: left lung, right lung, left opacity, right opacity).
fn phantom(shape: [usize; 3], spacing: [f64; 3]) -> (Vec<f32>, [usize; 4]) {
    let [s, r, c] = shape;
    let mut hu = vec![-1000.0f32; s * r * c];
    let mut truth = [0usize; 4];
    let (cr, cc) = (r as f64 / 2.0, c as f64 / 2.0);
    let mm = |k: usize, i: usize, j: usize| {
        (k as f64 * spacing[0], (i as f64 - cr) * spacing[1], (j as f64 - cc) * spacing[2])
    };
    let zc = s as f64 * spacing[0] / 2.0;
    for k in 0..s {
        for i in 0..r {
            for j in 0..c {
                let (z, y, x) = mm(k, i, j);
                let idx = (k * r + i) * c + j;
                // body: elliptic cylinder 300 x 200 mm, from 10 mm to the top
                if (x / 150.0).powi(2) + (y / 100.0).powi(2) <= 1.0 && z >= 10.0 {
                    hu[idx] = 40.0 + ((i * 7 + j * 13 + k * 3) % 11) as f32 - 5.0;
                }
                // lungs: ellipsoids centred at x = +-65 mm (patient left = +x = higher columns)
                for (lung, sign) in [(0usize, 1.0f64), (1, -1.0)] {
                    let (dx, dy, dz) = (x - sign * 65.0, y + 5.0, z - zc);
                    if (dx / 50.0).powi(2) + (dy / 70.0).powi(2) + (dz / 110.0).powi(2) <= 1.0 {
                        hu[idx] = -850.0 + ((i * 5 + j * 3 + k) % 21) as f32 - 10.0;
                        truth[lung] += 1;
                        // opacities: left ground glass r = 22 mm low in the lung; right consolidation r = 18 mm
                        let (ox, oy, oz, rad, val) = if lung == 0 {
                            (65.0, -5.0, zc - 50.0, 22.0, -500.0)
                        } else {
                            (-65.0, -5.0, zc + 20.0, 18.0, 20.0)
                        };
                        if (x - ox).powi(2) + (y - oy).powi(2) + (z - oz).powi(2) <= rad * rad {
                            hu[idx] = val;
                            truth[2 + lung] += 1;
                        }
                    }
                }
            }
        }
    }
    (hu, truth)
}

#[test]
fn phantom_volumes_within_two_percent() {
    let model = Mutex::new(model());
    let (shape, spacing) = ([64, 240, 240], [5.0, 1.5, 1.5]);
    let (hu, truth) = phantom(shape, spacing);
    let [left, right, opacity] = masks_of(&model, &hu, shape, spacing);
    let f = compute(&Grid { hu: &hu, shape, spacing_mm: spacing }, &Masks::lungs(&left, &right, &opacity))
        .expect("findings");
    let voxel_ml = spacing.iter().product::<f64>() / 1000.0;
    let t = truth.map(|n| n as f64 * voxel_ml);
    let lung = |side| f.lungs.iter().find(|l| l.side == side).expect("lung").involvement;
    let (l, r) = (lung(Side::Left), lung(Side::Right));
    assert!(within(l.lung_ml, t[0], 0.02), "left lung {:.1} mL vs {:.1}", l.lung_ml, t[0]);
    assert!(within(r.lung_ml, t[1], 0.02), "right lung {:.1} mL vs {:.1}", r.lung_ml, t[1]);
    assert!(within(l.opacity_ml, t[2], 0.02), "left opacity {:.2} mL vs {:.2}", l.opacity_ml, t[2]);
    assert!(within(r.opacity_ml, t[3], 0.02), "right opacity {:.2} mL vs {:.2}", r.opacity_ml, t[3]);
    let total_pct = 100.0 * (t[2] + t[3]) / (t[0] + t[1]);
    assert!(
        (f.total.involvement_pct - total_pct).abs() < 0.1 * total_pct.max(1.0),
        "{} vs {total_pct}",
        f.total.involvement_pct
    );
    assert_eq!(f.extent_class, ExtentClass::from_pct(total_pct));
    // the consolidation is denser than the ground glass
    assert!(
        r.opacity_ml > 0.0 && f.lungs[1].opacity_mean_hu.unwrap_or(-1000.0) > f.lungs[0].opacity_mean_hu.unwrap_or(0.0)
    );
}

#[test]
fn an_empty_chest_is_negative_for_pneumonia() {
    let model = Mutex::new(model());
    let (shape, spacing) = ([48, 200, 200], [5.0, 1.5, 1.5]);
    let (mut hu_clean, _) = phantom(shape, spacing);
    // no opacities: the -500 and +20 HU spheres back to lung tissue (body is >= 35 HU)
    for v in hu_clean.iter_mut() {
        if (-600.0..30.0).contains(v) {
            *v = -850.0;
        }
    }
    let [left, right, opacity] = masks_of(&model, &hu_clean, shape, spacing);
    let f = compute(&Grid { hu: &hu_clean, shape, spacing_mm: spacing }, &Masks::lungs(&left, &right, &opacity))
        .expect("findings");
    assert!(f.total.involvement_pct < 1.0, "{}", f.total.involvement_pct);
    assert_eq!(f.pattern, Pattern::Negative);
    assert!(f.severity_score <= 2, "score {}", f.severity_score);
}

fn sample(variant: &str) -> Vec<PathBuf> {
    sample_series(variant)
}

#[test]
fn the_real_sample_both_lungs_and_the_right_lung_mass() {
    let model = Mutex::new(model());
    let outcome = Analysis::analyse_files(&model, &sample(""), 0).expect("analysed");
    assert_eq!(outcome.result["status"], "analysed", "{}", outcome.result);
    let a = outcome.analysed.expect("volume and masks");
    let f = a.findings.as_ref().expect("COVID-19 findings");
    let left = f.lungs.iter().find(|l| l.side == Side::Left).expect("left").involvement;
    let right = f.lungs.iter().find(|l| l.side == Side::Right).expect("right").involvement;
    assert!(left.lung_ml > 800.0 && right.lung_ml > 800.0, "both lungs: {left:?} {right:?}");
    let total = left.lung_ml + right.lung_ml;
    assert!((2500.0..=8000.0).contains(&total), "total lung volume {total:.0} mL");
    assert!(right.opacity_ml > left.opacity_ml, "the mass is in the right lung: {right:?} vs {left:?}");

    // The TCIA tumour boxes: opacity in the right-lung mask inside each annotated box.
    let v = &a.study.volume;
    let opacity = &a.segmentation.channels[2];
    let right_mask = &a.segmentation.channels[1];
    let mut boxes = 0;
    let (mut dense, mut dense_in_lung, mut dense_opacity) = (0usize, 0usize, 0usize);
    for (k, s) in v.slices.iter().enumerate() {
        let xml = repo_root().join(format!("data/ct/lung-dx-a0002-annotations/{}.xml", s.sop_instance_uid));
        let Ok(text) = std::fs::read_to_string(&xml) else { continue };
        let num = |tag: &str| -> usize {
            let start = text.find(&format!("<{tag}>")).expect("tag") + tag.len() + 2;
            text[start..].split('<').next().and_then(|n| n.trim().parse().ok()).expect("number")
        };
        let (x0, y0, x1, y1) = (num("xmin"), num("ymin"), num("xmax"), num("ymax"));
        let mut inside = 0;
        for r in 0..v.shape[1] {
            for c in 0..v.shape[2] {
                let (sr, sc) = v.source_pixel(r, c);
                if (y0..=y1).contains(&sr) && (x0..=x1).contains(&sc) {
                    let i = v.index(k, r, c);
                    if opacity[i] != 0 && right_mask[i] != 0 {
                        inside += 1;
                    }
                    if v.hu[i] > -300.0 {
                        dense += 1;
                        dense_in_lung += usize::from(right_mask[i] != 0);
                        dense_opacity += usize::from(right_mask[i] != 0 && opacity[i] != 0);
                    }
                }
            }
        }
        assert!(inside > 100, "slice {k}: {inside} opacity pixels of the right lung in the tumour box");
        boxes += 1;
    }
    assert!(boxes >= 5, "annotated slices found: {boxes}");
    // the tumour abuts the mediastinum and the spine: how much of the boxes' dense tissue the
    // lung holds (the boxes also hold some mediastinum, so 100 % is not the aim)
    eprintln!(
        "TCIA boxes: {dense} dense voxels, {:.1} % inside the right lung, {:.1} % counted as opacity",
        100.0 * dense_in_lung as f64 / dense as f64,
        100.0 * dense_opacity as f64 / dense as f64
    );
}

/// The pleural-cavity step looks along the posterior chest wall, the dependent side of a supine
/// patient. The sample sent as a prone scan (Patient Position HFP, the images unchanged) reads
/// the same figures, and its result says that its dependent side was not looked at: in the
/// findings (SR, text, messages) and in the pipeline's warnings. The supine read says nothing
/// of the kind.
#[test]
fn a_prone_scan_says_its_dependent_side_was_not_looked_at() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    let model = Mutex::new(model());
    let supine = Analysis::analyse_files(&model, &sample(""), 0).expect("analysed").result;
    let dir = tempfile::tempdir().expect("tmp");
    let prone: Vec<PathBuf> = sample("")
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let path = dir.path().join(format!("{k:04}.dcm"));
            rewrite(p, &path, |obj| {
                obj.put(DataElement::new(
                    dicom_dictionary_std::tags::PATIENT_POSITION,
                    VR::CS,
                    PrimitiveValue::from("HFP"),
                ));
            });
            path
        })
        .collect();
    let prone = Analysis::analyse_files(&model, &prone, 0).expect("analysed").result;
    let cautions = |r: &serde_json::Value| -> Vec<String> {
        r["findings"]["cautions"]
            .as_array()
            .expect("cautions")
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect()
    };
    let about_position =
        |r: &serde_json::Value| cautions(r).into_iter().filter(|c| c.contains("Patient Position")).collect::<Vec<_>>();
    // the sample as it is: no caution of any kind (its field of view holds the whole chest)
    assert!(cautions(&supine).is_empty(), "{:?}", cautions(&supine));
    let said = about_position(&prone);
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(cautions(&prone).len(), 1, "{:?}", cautions(&prone));
    assert!(said[0].starts_with("Patient Position HFP (prone: the dependent side is anterior)"), "{}", said[0]);
    assert!(said[0].contains("may be under-estimated"), "{}", said[0]);
    let warnings = prone["pipeline"]["warnings"].as_array().expect("warnings");
    assert!(warnings.iter().any(|w| w.as_str() == Some(said[0].as_str())), "{warnings:?}");
    // the caution is the only difference: the same images give the same figures
    for key in ["total", "lungs", "zones", "severity_score", "extent_class", "uncertainty"] {
        assert_eq!(prone["findings"][key], supine["findings"][key], "{key}");
    }
}

#[test]
fn shuffled_order_and_every_transfer_syntax_give_identical_findings() {
    let model = Mutex::new(model());
    let reference = Analysis::analyse_files(&model, &sample(""), 0).expect("analysed").result["findings"].clone();
    let mut shuffled = sample("");
    shuffled.reverse();
    shuffled.swap(3, 17);
    for (name, files) in
        [("shuffled", shuffled), ("jpegll", sample("-jpegll")), ("jpegls", sample("-jpegls")), ("j2k", sample("-j2k"))]
    {
        let findings = Analysis::analyse_files(&model, &files, 0).expect("analysed").result["findings"].clone();
        assert_eq!(findings, reference, "{name}");
    }
}

#[test]
fn a_sphere_inserted_in_one_lung_adds_its_volume_there_only() {
    let model = Mutex::new(model());
    let study = build_study_volume(&sample(""), &VolumeContract::default()).expect("volume");
    let v = &study.volume;
    let [left, right, opacity] = masks_of(&model, &v.hu, v.shape, v.spacing_mm);
    let grid = Grid { hu: &v.hu, shape: v.shape, spacing_mm: v.spacing_mm };
    let before = compute(&grid, &Masks::lungs(&left, &right, &opacity)).expect("findings");

    // Centre: the left-lung voxel deepest inside the lung on its middle slice (largest in-plane
    // distance to a non-lung pixel along rows and columns), away from existing opacity.
    let [s, rows, cols] = v.shape;
    let (first, last) = before.lungs[0].slice_extent.expect("left lung extent");
    let k0 = (first + last) / 2;
    let mut best = (0usize, 0usize, 0usize);
    for r in 0..rows {
        for c in 0..cols {
            let inside = |dr: i64, dc: i64| {
                let (rr, cc) = (r as i64 + dr, c as i64 + dc);
                rr >= 0
                    && cc >= 0
                    && (rr as usize) < rows
                    && (cc as usize) < cols
                    && left[v.index(k0, rr as usize, cc as usize)] != 0
            };
            let mut d: i64 = 0;
            while d < 60 && inside(d, 0) && inside(-d, 0) && inside(0, d) && inside(0, -d) {
                d += 1;
            }
            if d as usize > best.2 {
                best = (r, c, d as usize);
            }
        }
    }
    let radius_mm = (best.2 as f64 * v.spacing_mm[1] * 0.6).clamp(8.0, 20.0);
    let mut hu = v.hu.clone();
    let mut inserted = 0usize;
    for k in 0..s {
        for r in 0..rows {
            for c in 0..cols {
                let dz = (k as f64 - k0 as f64) * v.spacing_mm[0];
                let dy = (r as f64 - best.0 as f64) * v.spacing_mm[1];
                let dx = (c as f64 - best.1 as f64) * v.spacing_mm[2];
                let i = v.index(k, r, c);
                if dx * dx + dy * dy + dz * dz <= radius_mm * radius_mm && opacity[i] == 0 {
                    hu[i] = -500.0;
                    inserted += 1;
                }
            }
        }
    }
    let inserted_ml = inserted as f64 * v.voxel_volume_ml();
    assert!(inserted_ml > 1.0, "sphere of {radius_mm:.1} mm: {inserted_ml:.2} mL");
    let [left2, right2, opacity2] = masks_of(&model, &hu, v.shape, v.spacing_mm);
    let grid2 = Grid { hu: &hu, shape: v.shape, spacing_mm: v.spacing_mm };
    let after = compute(&grid2, &Masks::lungs(&left2, &right2, &opacity2)).expect("findings");
    let grown = after.lungs[0].involvement.opacity_ml - before.lungs[0].involvement.opacity_ml;
    assert!(within(grown, inserted_ml, 0.10), "left opacity grew {grown:.2} mL for {inserted_ml:.2} mL inserted");
    assert_eq!(after.lungs[1].involvement, before.lungs[1].involvement, "the right lung does not change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_end_the_job_with_a_clear_reason() {
    let node = TestNode::start(|c| c.assembly.stable_after = Duration::from_millis(500)).await;
    let port = node.port().to_string();
    // Missing middle slice: the sample without its 15th file.
    let files: Vec<PathBuf> = sample("").into_iter().enumerate().filter(|(i, _)| *i != 14).map(|(_, p)| p).collect();
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "FIRSTREAD", "127.0.0.1", &port]).args(&files);
    assert!(run(cmd).status.success());
    let done = eventually_async(Duration::from_secs(60), || async {
        node.count("SELECT count(*) FROM jobs WHERE state = 'done'").await == 1
    })
    .await;
    assert!(done, "job done");
    let (status, reason): (String, String) =
        sqlx::query_as("SELECT result->>'status', coalesce(result->>'reason', '') FROM jobs")
            .fetch_one(&node.pool)
            .await
            .expect("job");
    assert_eq!(status, "refused");
    assert!(reason.contains("missing") || reason.contains("gap"), "{reason}");
    assert_eq!(node.count("SELECT count(*) FROM job_runs").await, 1, "a refusal is not retried");
}

#[test]
fn a_single_slice_is_refused() {
    let model = Mutex::new(model());
    let outcome = Analysis::analyse_files(&model, &sample("")[..1], 0).expect("outcome");
    assert_eq!(outcome.result["status"], "refused");
    let reason = outcome.result["reason"].as_str().unwrap_or_default().to_lowercase();
    assert!(reason.contains("slice"), "{reason}");
}

/// Writes instance `p` to `path` as a new SOP Instance (a new SOP Instance UID), after `edit`.
fn rewrite(p: &std::path::Path, path: &std::path::Path, edit: impl FnOnce(&mut dicom_object::DefaultDicomObject)) {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let mut obj = dicom_object::open_file(p).expect("instance");
    edit(&mut obj);
    let sop = format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
    obj.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop.as_str())));
    obj.meta_mut().media_storage_sop_instance_uid = sop;
    obj.meta_mut().update_information_group_length();
    obj.write_to_file(path).expect("write");
}

/// Writes `files` again, `copies` times, each copy a new set of SOP Instances stacked above the
/// last (Image Position (Patient) z raised by the series' height): one taller series.
fn stacked(files: &[PathBuf], copies: usize, out: &std::path::Path) -> Vec<PathBuf> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let position = |obj: &dicom_object::DefaultDicomObject| {
        obj.element(tags::IMAGE_POSITION_PATIENT).expect("position").to_multi_float64().expect("ds")
    };
    let mut zs: Vec<f64> = files.iter().map(|p| position(&dicom_object::open_file(p).expect("instance"))[2]).collect();
    zs.sort_by(f64::total_cmp);
    let height = (zs[zs.len() - 1] - zs[0]) / (zs.len() - 1) as f64 * zs.len() as f64;
    let mut out_files = files.to_vec();
    for copy in 1..=copies {
        for (k, p) in files.iter().enumerate() {
            let path = out.join(format!("copy{copy}-{k:04}.dcm"));
            rewrite(p, &path, |obj| {
                let mut at = position(obj);
                at[2] += height * copy as f64;
                let number = (copy * files.len() + k + 1).to_string();
                obj.put(DataElement::new(tags::INSTANCE_NUMBER, VR::IS, PrimitiveValue::from(number.as_str())));
                let at = at.iter().map(|v| format!("{v:.3}")).collect();
                obj.put(DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, PrimitiveValue::Strs(at)));
            });
            out_files.push(path);
        }
    }
    out_files
}

/// Writes `files` again as a new series of the same study (new Series and SOP Instance UIDs).
fn as_new_series(files: &[PathBuf], out: &std::path::Path) -> Vec<PathBuf> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    std::fs::create_dir_all(out).expect("out");
    let series = format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
    files
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let path = out.join(format!("{k:04}.dcm"));
            rewrite(p, &path, |obj| {
                obj.put(DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from(series.as_str())));
            });
            path
        })
        .collect()
}

/// Issue "no panics in the worker": a study over the worker's memory budget is refused from its
/// headers with the figures in the reason (not loaded, not retried), and the next study is
/// analysed normally by the same process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_over_the_memory_budget_is_refused_and_the_next_is_analysed() {
    // 30 x 512 x 512 at 22 bytes a voxel is 165 MiB, 60 slices 330 MiB
    let node = TestNode::start(|c| {
        c.assembly.stable_after = Duration::from_millis(500);
        c.worker.memory_budget_mib = 250;
    })
    .await;
    let port = node.port().to_string();
    let patient = |id| Patient { name: "Budget^Test", id, accession: id };
    let dir = tempfile::tempdir().expect("dir");
    let (large_uid, files) = sample_study(&dir.path().join("large"), &patient("P1"), |_, _| false);
    let large = stacked(&files, 1, &dir.path().join("large"));
    assert_eq!(large.len(), 60);
    let (small_uid, small) = sample_study(&dir.path().join("small"), &patient("P2"), |_, _| false);
    // a third study holds both: the 60-slice series over the budget and a 30-slice one
    let (both_uid, tall) = sample_study(&dir.path().join("both"), &patient("P3"), |_, _| false);
    let mut both = stacked(&tall, 1, &dir.path().join("both"));
    both.extend(as_new_series(&tall, &dir.path().join("both-short")));
    let job = |uid: String| {
        let pool = node.pool.clone();
        async move {
            sqlx::query_as::<_, (String, String, String, i64)>(
                "SELECT state, coalesce(result->>'status', ''), coalesce(result->>'reason', ''), \
                 (SELECT count(*) FROM job_runs r WHERE r.job_id = j.id) \
                 FROM jobs j WHERE kind = 'analysis' AND study_instance_uid = $1",
            )
            .bind(uid)
            .fetch_optional(&pool)
            .await
            .expect("job")
        }
    };
    for (uid, files) in [(&large_uid, &large), (&small_uid, &small), (&both_uid, &both)] {
        let mut cmd = dcmtk("storescu");
        cmd.args(["-aec", "FIRSTREAD", "127.0.0.1", &port]).args(files);
        assert!(run(cmd).status.success());
        let done = eventually_async(Duration::from_secs(120), || async {
            job(uid.clone()).await.is_some_and(|(state, ..)| state == "done")
        })
        .await;
        assert!(done, "the job of {uid} ends");
    }
    let (_, status, reason, runs) = job(large_uid).await.expect("large study's job");
    assert_eq!(status, "refused", "{reason}");
    assert!(reason.contains("60 x 512 x 512 = 15728640 voxels"), "{reason}");
    assert!(reason.contains("memory budget of 250 MiB") && reason.contains("allows 11915636"), "{reason}");
    assert_eq!(runs, 1, "a refusal is not retried");
    let (_, status, reason, _) = job(small_uid).await.expect("small study's job");
    assert_eq!(status, "analysed", "the next study is analysed by the same node: {reason}");
    // the series over the budget is no candidate: the 30-slice series of the same study is read
    let (_, status, reason, _) = job(both_uid.clone()).await.expect("two-series study's job");
    assert_eq!(status, "analysed", "{reason}");
    let series: serde_json::Value =
        sqlx::query_scalar("SELECT result->'series' FROM jobs WHERE kind = 'analysis' AND study_instance_uid = $1")
            .bind(&both_uid)
            .fetch_one(&node.pool)
            .await
            .expect("decisions");
    let decisions = series.as_array().expect("series decisions");
    let chosen: Vec<_> = decisions.iter().filter(|d| d["chosen"] == true).collect();
    assert_eq!(chosen.len(), 1, "{series}");
    assert_eq!(chosen[0]["slices"], 30, "{series}");
    assert!(
        decisions.iter().any(|d| d["chosen"] == false
            && d["reason"].as_str().is_some_and(|r| r.contains("60 x 512 x 512 = 15728640 voxels"))),
        "the skipped series says why: {series}"
    );
}
