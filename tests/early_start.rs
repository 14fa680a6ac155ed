//! Early start with the shipped defaults (`early_ready` on, `stable_after` 5 s): a study with a
//! scout, two axial series and a dose report, sent by dcmtk `storescu` in one association and as
//! four back-to-back associations (one series each, as many scanners send), is analysed once, on
//! the series the volume builder's rule chooses, well before `stable_after`; a study whose only
//! axial series misses a slice waits for `stable_after`. A sender known to send whole studies (its
//! last three each over one association) is not waited the grace for; one that sends series by
//! series still is.
//!
//! The studies are made from the bundled sample CT (`data/ct/`: TCIA Lung-PET-CT-Dx, subject
//! Lung_Dx-A0002, doi:10.7937/TCIA.2020.NNC20461, CC BY 4.0; see `data/ct/README.md`): its B40f
//! and B70f reconstructions (30 axial slices each, 8 mm, the same acquisition) with new UIDs, a
//! scout made from one of its images, and an X-Ray Radiation Dose SR.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use firstread_e2e::*;

/// The node's default `stable_after`, which these tests leave as shipped.
const STABLE_AFTER: Duration = Duration::from_secs(5);

/// The tests run one at a time: back-to-back `storescu` invocations are timed against the node's
/// grace, and an analysis of another test on the same 2 cores would slow them down.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A study made from the sample, each series' files in sending order.
struct Study {
    uid: String,
    scout: Vec<PathBuf>,
    /// The B40f reconstruction: the softer kernel, the one the volume builder's rule chooses.
    soft: (String, Vec<PathBuf>),
    /// The B70f reconstruction (absent from the gap study).
    sharp: Option<(String, Vec<PathBuf>)>,
    dose: Vec<PathBuf>,
}

/// An X-Ray Radiation Dose SR (the CT dose report a scanner sends last) of `study`.
fn dose_report(out: &Path, study: &str, patient_id: &str) -> PathBuf {
    let (series, sop) = (uid(), uid());
    let code = |value: &str, scheme: &str, meaning: &str| {
        InMemDicomObject::from_element_iter([
            DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)),
            DataElement::new(tags::CODING_SCHEME_DESIGNATOR, VR::SH, PrimitiveValue::from(scheme)),
            DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
        ])
    };
    let sr = "1.2.840.10008.5.1.4.1.1.88.67";
    let obj = InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(sr)),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop.as_str())),
        DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(study)),
        DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from(series.as_str())),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("SR")),
        DataElement::new(tags::SERIES_NUMBER, VR::IS, PrimitiveValue::from("997")),
        DataElement::new(tags::SERIES_DESCRIPTION, VR::LO, PrimitiveValue::from("Dose Report")),
        DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(patient_id)),
        DataElement::new(tags::VALUE_TYPE, VR::CS, PrimitiveValue::from("CONTAINER")),
        DataElement::new(tags::CONTINUITY_OF_CONTENT, VR::CS, PrimitiveValue::from("SEPARATE")),
        DataElement::new(tags::COMPLETION_FLAG, VR::CS, PrimitiveValue::from("COMPLETE")),
        DataElement::new(tags::VERIFICATION_FLAG, VR::CS, PrimitiveValue::from("UNVERIFIED")),
        DataElement::new(
            tags::CONCEPT_NAME_CODE_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![code("113701", "DCM", "X-Ray Radiation Dose Report")]),
        ),
    ]);
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .media_storage_sop_class_uid(sr)
                .media_storage_sop_instance_uid(sop.as_str())
                .transfer_syntax("1.2.840.10008.1.2.1"),
        )
        .expect("file meta");
    std::fs::create_dir_all(out).expect("out");
    let path = out.join(format!("{sop}.dcm"));
    file.write_to_file(&path).expect("write dose report");
    path
}

/// The sample as a new study: a scout (one of its images as ORIGINAL\PRIMARY\LOCALIZER, coronal),
/// its B40f series (without its 15th slice when `gap`), its B70f series (unless `gap`) and a dose
/// report.
fn make_study(out: &Path, gap: bool) -> Study {
    let study = uid();
    let soft_src = sample_series("");
    let scout_series = uid();
    let scout = vec![copy_as(&soft_src[0], &out.join("scout"), &study, &scout_series, |obj| {
        obj.put(DataElement::new(tags::IMAGE_TYPE, VR::CS, PrimitiveValue::from("ORIGINAL\\PRIMARY\\LOCALIZER")));
        obj.put(DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, PrimitiveValue::from("1\\0\\0\\0\\0\\-1")));
        obj.put(DataElement::new(tags::SERIES_NUMBER, VR::IS, PrimitiveValue::from("1")));
        obj.put(DataElement::new(tags::SERIES_DESCRIPTION, VR::LO, PrimitiveValue::from("Topogram")));
    })];
    let series = |name: &str, src: &[PathBuf], skip: Option<usize>| {
        let s = uid();
        let files = src
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(_, p)| copy_as(p, &out.join(name), &study, &s, |_| {}))
            .collect::<Vec<_>>();
        (s, files)
    };
    let soft = series("soft", &soft_src, gap.then_some(14));
    let sharp = (!gap).then(|| series("sharp", &series_files("lung-dx-a0002-b70f"), None));
    let patient_id = dicom_object::open_file(&soft_src[0])
        .ok()
        .and_then(|o| o.element(tags::PATIENT_ID).ok().and_then(|e| e.to_str().ok().map(|s| s.into_owned())))
        .unwrap_or_default();
    let dose = vec![dose_report(&out.join("dose"), &study, &patient_id)];
    Study { uid: study, scout, soft, sharp, dose }
}

impl Study {
    /// Each series' files, in sending order: scout, B40f, B70f, dose report.
    fn series(&self) -> Vec<Vec<PathBuf>> {
        let mut all = vec![self.scout.clone(), self.soft.1.clone()];
        all.extend(self.sharp.iter().map(|(_, f)| f.clone()));
        all.push(self.dose.clone());
        all
    }
}

/// One `storescu` association (dcmtk's default calling AE title STORESCU) with `files`.
fn storescu(port: u16, files: &[PathBuf]) {
    storescu_as(port, "STORESCU", files);
}

/// One `storescu` association calling as `calling_ae_title`, with `files`.
fn storescu_as(port: u16, calling_ae_title: &str, files: &[PathBuf]) {
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aet", calling_ae_title, "-aec", "FIRSTREAD", "127.0.0.1", &port.to_string()]).args(files);
    let out = run(cmd);
    assert!(out.status.success(), "storescu: {}", String::from_utf8_lossy(&out.stderr));
}

/// Sends the study in one association, or one association per series back to back.
async fn send(node: &TestNode, study: &Study, back_to_back: bool) {
    let port = node.port();
    let series = study.series();
    tokio::task::spawn_blocking(move || {
        if back_to_back {
            for files in &series {
                storescu(port, files);
            }
        } else {
            storescu(port, &series.concat());
        }
    })
    .await
    .expect("storescu ran");
}

/// What the node did with a study once its analysis is done and `stable_after` has passed since
/// its last instance (so that a second study version would have been opened by then).
struct Outcome {
    /// (study version, state, result status, the volume's series, the series decisions).
    jobs: Vec<(i32, String, String, Option<String>, serde_json::Value)>,
    /// studies.version.
    version: i32,
    /// Job creation minus the last received instance's index time (s), from the database's clock
    /// (the node's own result objects, indexed in the study too, have no association).
    created_after_last_instance_s: f64,
}

async fn outcome(node: &TestNode, study: &str) -> Outcome {
    let done = eventually_async(Duration::from_secs(180), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM jobs WHERE kind = 'analysis' AND study_instance_uid = $1 AND state = 'done'",
        )
        .bind(study)
        .fetch_one(&node.pool)
        .await
        .unwrap_or(0)
            >= 1
    })
    .await;
    assert!(done, "the study's analysis ends");
    // until stable_after (and a second more) has passed since the last instance: a study split
    // into two versions would have its second by then
    let wait: f64 = sqlx::query_scalar(
        "SELECT GREATEST(0, EXTRACT(EPOCH FROM max(received_at) + make_interval(secs => $2) - now()))::float8 \
         FROM instances WHERE study_instance_uid = $1 AND association_id IS NOT NULL",
    )
    .bind(study)
    .bind(STABLE_AFTER.as_secs_f64() + 1.0)
    .fetch_one(&node.pool)
    .await
    .expect("last instance");
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    let jobs = sqlx::query_as(
        "SELECT study_version, state, coalesce(result->>'status', ''), result->'volume'->>'series_instance_uid', \
                coalesce(result->'series', '[]'::jsonb) \
         FROM jobs WHERE kind = 'analysis' AND study_instance_uid = $1 ORDER BY study_version",
    )
    .bind(study)
    .fetch_all(&node.pool)
    .await
    .expect("jobs");
    let version: i32 = sqlx::query_scalar("SELECT version FROM studies WHERE study_instance_uid = $1")
        .bind(study)
        .fetch_one(&node.pool)
        .await
        .expect("study");
    let created_after_last_instance_s: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM (SELECT min(created_at) FROM jobs WHERE kind = 'analysis' AND study_instance_uid = $1) \
                - (SELECT max(received_at) FROM instances WHERE study_instance_uid = $1 \
                   AND association_id IS NOT NULL))::float8",
    )
    .bind(study)
    .fetch_one(&node.pool)
    .await
    .expect("timestamps");
    Outcome { jobs, version, created_after_last_instance_s }
}

/// One study of a scout, two axial series and a dose report: one analysis, of the B40f series,
/// made ready before `stable_after`.
async fn analysed_once_on_the_right_series(back_to_back: bool) {
    let _serial = SERIAL.lock().await;
    let node = TestNode::start(|_| {}).await;
    assert!(node.config.assembly.early_ready, "early start is on by default");
    assert_eq!(node.config.assembly.stable_after, STABLE_AFTER, "stable_after as shipped");
    let dir = tempfile::tempdir().expect("dir");
    let study = make_study(dir.path(), false);
    send(&node, &study, back_to_back).await;
    assert_eq!(node.count("SELECT count(*) FROM instances").await, 62, "1 + 30 + 30 + 1 instances stored");
    let associations = node.count("SELECT count(*) FROM associations").await;
    assert_eq!(associations, if back_to_back { 4 } else { 1 });
    // how long storescu took from one release to its next association (what the grace must cover)
    let gaps: Vec<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM opened_at - lag(closed_at) OVER (ORDER BY opened_at))::float8 FROM associations \
         ORDER BY opened_at OFFSET 1",
    )
    .fetch_all(&node.pool)
    .await
    .expect("associations");
    eprintln!("release -> next association (s): {gaps:?}, grace {:?}", node.config.assembly.early_ready_grace);
    let o = outcome(&node, &study.uid).await;
    assert_eq!(o.jobs.len(), 1, "one analysis: {:?}", o.jobs.iter().map(|j| (j.0, &j.1)).collect::<Vec<_>>());
    assert_eq!(o.version, 1, "one study version: the study was not split");
    let (version, state, status, volume_series, decisions) = &o.jobs[0];
    assert_eq!((*version, state.as_str(), status.as_str()), (1, "done", "analysed"), "{decisions}");
    // the volume builder's rule: same coverage and spacing, then the softer kernel (B40f over B70f)
    assert_eq!(volume_series.as_deref(), Some(study.soft.0.as_str()), "{decisions}");
    let decisions = decisions.as_array().expect("series decisions");
    // every CT series was in the study version analysed (the dose report is not read: not a CT image)
    assert_eq!(decisions.len(), 3, "scout, B40f and B70f: {decisions:?}");
    let sharp = study.sharp.as_ref().map(|(s, _)| s.as_str()).unwrap_or_default();
    let reason = decisions
        .iter()
        .find(|d| d["series_instance_uid"] == sharp)
        .and_then(|d| d["reason"].as_str())
        .unwrap_or_default();
    assert!(reason.contains("softer reconstruction kernel"), "{reason}");
    // made ready early: the job came less than stable_after after the last instance
    eprintln!(
        "back_to_back={back_to_back}: job created {:.2} s after the last instance",
        o.created_after_last_instance_s
    );
    assert!(
        o.created_after_last_instance_s < STABLE_AFTER.as_secs_f64(),
        "job created {:.2} s after the last instance, not before stable_after",
        o.created_after_last_instance_s
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_with_scout_dose_report_and_two_axial_series_in_one_association_is_analysed_once_early() {
    analysed_once_on_the_right_series(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_sent_as_four_back_to_back_associations_is_analysed_once_early() {
    analysed_once_on_the_right_series(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_whose_only_axial_series_misses_a_slice_waits_for_stable_after() {
    let _serial = SERIAL.lock().await;
    let node = TestNode::start(|_| {}).await;
    let dir = tempfile::tempdir().expect("dir");
    let study = make_study(dir.path(), true);
    send(&node, &study, false).await;
    let o = outcome(&node, &study.uid).await;
    assert_eq!(o.jobs.len(), 1);
    eprintln!("gap: job created {:.2} s after the last instance", o.created_after_last_instance_s);
    // stable_at = the last instance's index time + stable_after, on the database's clock
    assert!(
        o.created_after_last_instance_s >= STABLE_AFTER.as_secs_f64() - 0.001,
        "made ready {:.2} s after the last instance, before stable_after",
        o.created_after_last_instance_s
    );
    let (_, _, status, _, decisions) = &o.jobs[0];
    assert_eq!(status, "refused", "the volume builder refuses the gap too: {decisions}");
}

/// Seconds from the release of the last association that delivered to `study` to its analysis
/// job's creation (database clock), once the job exists.
async fn ready_after_release(node: &TestNode, study: &str) -> f64 {
    let sql = "SELECT EXTRACT(EPOCH FROM \
                 (SELECT min(created_at) FROM jobs WHERE kind = 'analysis' AND study_instance_uid = $1) \
                 - (SELECT max(a.closed_at) FROM associations a JOIN study_deliveries d ON d.association_id = a.id \
                    WHERE d.study_instance_uid = $1))::float8";
    let after =
        || async { sqlx::query_scalar::<_, Option<f64>>(sql).bind(study).fetch_one(&node.pool).await.ok().flatten() };
    let found = eventually_async(Duration::from_secs(60), || async { after().await.is_some() }).await;
    assert!(found, "study {study} made ready");
    after().await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_of_whole_studies_is_not_waited_for_one_that_sends_series_by_series_is() {
    let _serial = SERIAL.lock().await;
    // a grace long enough to tell "waited" from "not waited" on the database's clock; stable_after
    // longer still, so that only early readiness makes these studies ready
    let grace = Duration::from_secs(3);
    let node = TestNode::start(|c| {
        c.assembly.early_ready_grace = grace;
        c.assembly.stable_after = Duration::from_secs(120);
    })
    .await;
    assert_eq!(node.config.assembly.early_ready_trust_after, 3, "as shipped");
    let dir = tempfile::tempdir().expect("dir");
    let port = node.port();
    // CT_WHOLE sends each study (its B40f series) in one association: its first three studies wait
    // the grace, the fourth does not
    for n in 0..4 {
        let study = make_study(&dir.path().join(format!("whole{n}")), false);
        let files = study.soft.1.clone();
        tokio::task::spawn_blocking(move || storescu_as(port, "CT_WHOLE", &files)).await.expect("storescu");
        let after = ready_after_release(&node, &study.uid).await;
        eprintln!("whole-study sender, study {}: ready {after:.3} s after its release", n + 1);
        if n < 3 {
            assert!(after >= grace.as_secs_f64() - 0.001, "study {}: ready {after:.3} s after release", n + 1);
        } else {
            assert!(after < grace.as_secs_f64() - 1.0, "a known sender waited: {after:.3} s after release");
        }
    }
    // CT_SERIES sends the scout and the B40f series back to back, one association each: every
    // study waits the grace, and stays one study version
    for n in 0..4 {
        let study = make_study(&dir.path().join(format!("series{n}")), false);
        let (scout, soft) = (study.scout.clone(), study.soft.1.clone());
        tokio::task::spawn_blocking(move || {
            storescu_as(port, "CT_SERIES", &scout);
            storescu_as(port, "CT_SERIES", &soft);
        })
        .await
        .expect("storescu");
        let after = ready_after_release(&node, &study.uid).await;
        eprintln!("series-by-series sender, study {}: ready {after:.3} s after its last release", n + 1);
        assert!(after >= grace.as_secs_f64() - 0.001, "study {}: ready {after:.3} s after release", n + 1);
        let version: i32 = sqlx::query_scalar("SELECT version FROM studies WHERE study_instance_uid = $1")
            .bind(&study.uid)
            .fetch_one(&node.pool)
            .await
            .expect("study");
        assert_eq!(version, 1, "one study version");
    }
}
