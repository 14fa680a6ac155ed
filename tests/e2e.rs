//! End to end with the real `firstread` binary as a subprocess: dcmtk `storescu` is the modality,
//! dcmtk `storescp` (the sender, listed as an export destination) and a real Orthanc (the PACS,
//! `export.always`) receive the first read. The sample CT goes in each of its four transfer
//! syntaxes; the result set that comes back is checked as in the reporting tests (dciodvfy without
//! errors, dsrdump, the SR's values equal the analysis's findings, the SEG references the CT, same
//! patient and study) and must equal the findings computed in this process from the files. A node
//! killed with SIGKILL while the analysis job runs is restarted and delivers exactly one result
//! set. `firstread demo` prints the first read and its `--json` parses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use dicom_core::Tag;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use firstread_e2e::*;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// The findings of the sample computed in this process from the files (the reference the network
/// path must reproduce; every encoding decodes to identical pixels).
fn reference_findings() -> &'static Value {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let model = firstread_inference::Model::load(&repo_root().join("models/covid19-lung-ct/0.2.4")).expect("model");
        let outcome = firstread::analysis::Analysis::analyse_files(&Mutex::new(model), &sample_series(""), 0)
            .expect("in-process analysis");
        assert_eq!(outcome.result["status"], "analysed", "{}", outcome.result);
        outcome.result["findings"].clone()
    })
}

/// Asserts two JSON values equal, numbers within 1e-9 relative: the job result passes through
/// PostgreSQL jsonb (decimal text), and serde_json's default float parsing may be 1 ulp off.
fn assert_json_near(got: &Value, want: &Value, at: &str) {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap_or(f64::NAN), b.as_f64().unwrap_or(f64::NAN));
            assert!((a - b).abs() <= 1e-9 * a.abs().max(b.abs()), "{at}: {a} vs {b}");
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{at}: lengths");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_json_near(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<BTreeSet<_>>();
            assert_eq!(keys(a), keys(b), "{at}: keys");
            for (k, x) in a {
                assert_json_near(x, &b[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(got, want, "{at}"),
    }
}

/// A `firstread serve` subprocess with its database, storage folder and configuration file.
struct ServeNode {
    db: TestDb,
    root: tempfile::TempDir,
    port: u16,
    config: PathBuf,
    process: Option<Process>,
    pool: PgPool,
}

impl ServeNode {
    /// Writes the configuration (stable_after 500 ms, results to MODALITY on `modality_port`, and
    /// to ORTHANC on `orthanc_port` for every study when given) and starts the node.
    async fn start(modality_port: u16, orthanc_port: Option<u16>, extra_env: &[(&'static str, String)]) -> ServeNode {
        let db = TestDb::create().await;
        let root = tempfile::tempdir().expect("storage folder");
        let mut toml = format!(
            "[assembly]\nstable_after = \"500ms\"\n\n[worker]\nlease = \"2s\"\n\n[export]\nbackoff_base = \"500ms\"\n\
             backoff_max = \"2s\"\nmax_attempts = 4\n{}\n\
             [[export.destinations]]\nae_title = \"MODALITY\"\nhost = \"127.0.0.1\"\nport = {modality_port}\n",
            if orthanc_port.is_some() { "always = [\"ORTHANC\"]\n" } else { "" }
        );
        if let Some(port) = orthanc_port {
            toml.push_str(&format!(
                "\n[[export.destinations]]\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nport = {port}\n"
            ));
        }
        let config = root.path().join("firstread.toml");
        std::fs::write(&config, toml).expect("config written");
        let pool = PgPoolOptions::new().max_connections(2).connect(&db.url).await.expect("pool");
        let mut node = ServeNode { db, root, port: free_port(), config, process: None, pool };
        node.spawn(extra_env).await;
        node
    }

    /// (Re)starts the process and waits until it accepts connections.
    async fn spawn(&mut self, extra_env: &[(&'static str, String)]) {
        // the configuration file lives in the storage root; the node ignores files there
        let mut env = node_env(&self.db, &self.root.path().join("store"), self.port);
        env.extend(extra_env.iter().cloned());
        let config = self.config.display().to_string();
        self.process = Some(Process::start(&["--config", &config, "serve"], &env));
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", self.port).parse().expect("addr");
        let up =
            eventually_async(Duration::from_secs(60), || async { tokio::net::TcpStream::connect(addr).await.is_ok() })
                .await;
        assert!(up, "firstread serve listening on {addr}");
    }

    fn kill9(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill9();
        }
    }

    /// Sends the sample in `variant` with dcmtk storescu as MODALITY, proposing only its transfer
    /// syntax (`flag`: -xe, -xs, -xt, -xv).
    fn push(&self, variant: &str, flag: &str) {
        let mut cmd = dcmtk("storescu");
        cmd.args([flag, "-aec", "FIRSTREAD", "-aet", "MODALITY", "127.0.0.1", &self.port.to_string()])
            .args(sample_series(variant));
        let out = run(cmd);
        assert!(out.status.success(), "storescu: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// (state, attempts, last error) of the job of `kind` (to `destination`). An export is two
    /// jobs, the SR and the other objects: done once both exist and are done, else the first
    /// part that is not.
    async fn job(&self, kind: &str, destination: &str) -> Option<(String, i32, Option<String>)> {
        let rows: Vec<(String, i32, Option<String>)> = sqlx::query_as(
            "SELECT state, attempts, last_error FROM jobs WHERE kind = $1 AND ($2 = '' OR destination = $2) ORDER BY id",
        )
        .bind(kind)
        .bind(destination)
        .fetch_all(&self.pool)
        .await
        .expect("job query");
        let parts = if kind == "export" { 2 } else { 1 };
        let first = rows.first()?.clone();
        match rows.iter().find(|r| r.0 != "done") {
            Some(pending) => Some(pending.clone()),
            None if rows.len() < parts => Some(("queued".into(), 0, None)),
            None => Some(first),
        }
    }

    async fn wait_job_done(&self, kind: &str, destination: &str, timeout: Duration) {
        let done = eventually_async(timeout, || async {
            matches!(self.job(kind, destination).await, Some((s, _, _)) if s == "done" || s == "dead")
        })
        .await;
        let state = self.job(kind, destination).await;
        assert!(done && matches!(&state, Some((s, _, _)) if s == "done"), "{kind} job {destination}: {state:?}");
    }

    /// The analysis job's result, once recorded (its export jobs are queued just before the
    /// analysis job completes, so an export can finish first).
    async fn analysis_result(&self) -> Value {
        let query = "SELECT result FROM jobs WHERE kind = 'analysis' AND state = 'done'";
        let recorded = eventually_async(Duration::from_secs(30), || async {
            sqlx::query_scalar::<_, Value>(query).fetch_optional(&self.pool).await.ok().flatten().is_some()
        })
        .await;
        assert!(recorded, "the analysis job recorded no result");
        sqlx::query_scalar(query).fetch_one(&self.pool).await.expect("analysis result")
    }

    /// The result objects the analysis wrote: (file, SOP Instance UID), SR first.
    async fn result_objects(&self) -> Vec<(PathBuf, String)> {
        let result = self.analysis_result().await;
        let files: Vec<&str> =
            result["result_files"].as_array().expect("result_files").iter().filter_map(Value::as_str).collect();
        files
            .iter()
            .map(|f| {
                let path = self.root.path().join("store").join(f);
                let uid = read_part10(&path).sop_instance_uid;
                (path, uid)
            })
            .collect()
    }
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.element_opt(tag).ok().flatten().and_then(|e| e.to_str().ok()).map(|s| s.trim_end_matches(['\0', ' ']).into())
}

fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.element_opt(tag).ok().flatten().and_then(|e| e.items()).unwrap_or(&[])
}

/// Every NUM content item of an SR as (concept code value, numeric value), depth first.
fn sr_numbers(obj: &InMemDicomObject, out: &mut Vec<(String, String)>) {
    for item in items(obj, tags::CONTENT_SEQUENCE) {
        if text(item, tags::VALUE_TYPE).as_deref() == Some("NUM") {
            let code = items(item, tags::CONCEPT_NAME_CODE_SEQUENCE).first().and_then(|c| text(c, tags::CODE_VALUE));
            let value = items(item, tags::MEASURED_VALUE_SEQUENCE).first().and_then(|m| text(m, tags::NUMERIC_VALUE));
            if let (Some(code), Some(value)) = (code, value) {
                out.push((code, value.trim().to_owned()));
            }
        }
        sr_numbers(item, out);
    }
}

/// dciodvfy (dicom3tools) must report no line starting with "Error".
fn dciodvfy(path: &Path) {
    let out = Command::new("/usr/bin/dciodvfy").arg(path).output().expect("dciodvfy (dicom3tools) runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("Error")).collect();
    assert!(errors.is_empty(), "dciodvfy errors in {}:\n{}", path.display(), errors.join("\n"));
}

/// Checks what a destination received against what the node wrote: exactly one copy of each
/// result object (by SOP Instance UID), each valid, same patient and study as the CT, the SR's
/// numbers equal to `findings`, the SEG on the CT series.
fn check_result_set(received: &[PathBuf], expected: &[(PathBuf, String)], findings: &Value) {
    let source = dicom_object::open_file(&sample_series("")[0]).expect("source CT");
    let source_text = |t| text(&source, t);
    let mut by_uid: BTreeMap<String, DefaultDicomObject> = BTreeMap::new();
    for path in received {
        let obj = dicom_object::open_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let uid = text(&obj, tags::SOP_INSTANCE_UID).expect("SOP Instance UID");
        assert!(by_uid.insert(uid.clone(), obj).is_none(), "{uid} received twice");
        dciodvfy(path);
    }
    let got: BTreeSet<&String> = by_uid.keys().collect();
    let want: BTreeSet<&String> = expected.iter().map(|(_, uid)| uid).collect();
    assert_eq!(got, want, "exactly the node's result objects, once each");
    let mut modalities: Vec<String> = by_uid.values().filter_map(|o| text(o, tags::MODALITY)).collect();
    modalities.sort();
    let key_images = expected.len().saturating_sub(3);
    assert!(key_images >= 1, "at least one key image: {expected:?}");
    let mut want_modalities = vec!["OT".to_owned(); key_images];
    want_modalities.extend(["SEG", "SR", "SR"].map(String::from));
    assert_eq!(modalities, want_modalities);
    for obj in by_uid.values() {
        assert_eq!(text(obj, tags::STUDY_INSTANCE_UID), source_text(tags::STUDY_INSTANCE_UID));
        assert_eq!(text(obj, tags::PATIENT_ID), source_text(tags::PATIENT_ID));
    }

    // The SR (sent first): dsrdump reads it; its values are the findings.
    let sr_uid = &expected[0].1;
    let sr_file = received.iter().find(|p| read_part10(p).sop_instance_uid == *sr_uid).expect("SR file");
    let dump = Command::new("/usr/bin/dsrdump").arg(sr_file).output().expect("dsrdump runs");
    assert!(dump.status.success(), "dsrdump: {}", String::from_utf8_lossy(&dump.stderr));
    assert!(String::from_utf8_lossy(&dump.stdout).contains("Imaging Measurement Report"));
    let sr = &by_uid[sr_uid];
    assert_eq!(text(sr, tags::SOP_CLASS_UID).as_deref(), Some("1.2.840.10008.5.1.4.1.1.88.34"));
    let mut numbers = Vec::new();
    sr_numbers(sr, &mut numbers);
    let score = numbers.iter().find(|(c, _)| c == "SEVERITY-SCORE").map(|(_, v)| v.clone());
    assert_eq!(score, findings["severity_score"].as_u64().map(|s| s.to_string()), "{numbers:?}");
    let lung_opacity: Vec<String> = findings["lungs"]
        .as_array()
        .expect("lungs")
        .iter()
        .map(|l| format!("{:.2}", l["opacity_ml"].as_f64().expect("opacity_ml")))
        .collect();
    let opacity_values: Vec<&String> = numbers.iter().filter(|(c, _)| c == "OPACITY-VOLUME").map(|(_, v)| v).collect();
    assert!(!opacity_values.is_empty(), "the sample's mass is measured: {numbers:?}");
    for v in opacity_values {
        assert!(lung_opacity.contains(v), "SR opacity volume {v} mL is a lung's ({lung_opacity:?})");
    }

    // The SEG is on the CT series.
    let seg = by_uid.values().find(|o| text(o, tags::MODALITY).as_deref() == Some("SEG")).expect("SEG");
    let referenced: Vec<String> = items(seg, tags::REFERENCED_SERIES_SEQUENCE)
        .iter()
        .filter_map(|s| text(s, tags::SERIES_INSTANCE_UID))
        .collect();
    assert_eq!(referenced, vec![source_text(tags::SERIES_INSTANCE_UID).expect("CT series")]);
}

/// One transfer syntax: storescu -> node -> storescp (and Orthanc), results validated.
async fn sample_in(variant: &str, flag: &str, transfer_syntax: &str, with_orthanc: bool) {
    let findings = reference_findings();
    let received = tempfile::tempdir().expect("dir");
    let modality_port = free_port();
    let _storescp = storescp(modality_port, received.path());
    let orthanc_dir = tempfile::tempdir().expect("dir");
    let (orthanc_dicom, orthanc_http) = (free_port(), free_port());
    let _orthanc = with_orthanc.then(|| orthanc(orthanc_dir.path(), orthanc_dicom, orthanc_http));

    let node = ServeNode::start(modality_port, with_orthanc.then_some(orthanc_dicom), &[]).await;
    node.push(variant, flag);
    let stored: Vec<String> = sqlx::query_scalar("SELECT DISTINCT transfer_syntax_uid FROM instances")
        .fetch_all(&node.pool)
        .await
        .expect("instances");
    assert_eq!(stored, vec![transfer_syntax.to_owned()], "stored as received");

    node.wait_job_done("export", "MODALITY", Duration::from_secs(180)).await;
    let result = node.analysis_result().await;
    assert_eq!(result["status"], "analysed", "{result}");
    // the network path reproduces the in-process findings
    assert_json_near(&result["findings"], findings, "findings");
    let expected = node.result_objects().await;
    check_result_set(&files_under(received.path()), &expected, findings);

    if with_orthanc {
        node.wait_job_done("export", "ORTHANC", Duration::from_secs(60)).await;
        let studies = orthanc_get(orthanc_http, "/studies");
        assert_eq!(studies.as_array().map(Vec::len), Some(1), "one study in Orthanc: {studies}");
        let study = studies[0].as_str().expect("study id");
        let instances = orthanc_get(orthanc_http, &format!("/studies/{study}/instances?expand"));
        let mut uids: Vec<String> = instances
            .as_array()
            .expect("instances")
            .iter()
            .filter_map(|i| i["MainDicomTags"]["SOPInstanceUID"].as_str().map(str::to_owned))
            .collect();
        uids.sort();
        let mut want: Vec<String> = expected.iter().map(|(_, u)| u.clone()).collect();
        want.sort();
        assert_eq!(uids, want, "Orthanc holds the result set once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_vr_little_endian_sample_to_storescp_and_orthanc() {
    sample_in("", "-xe", uids::EXPLICIT_VR_LITTLE_ENDIAN, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jpeg_lossless_sample_to_storescp() {
    sample_in("-jpegll", "-xs", uids::JPEG_LOSSLESS_SV1, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jpeg_ls_sample_to_storescp() {
    sample_in("-jpegls", "-xt", uids::JPEGLS_LOSSLESS, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jpeg_2000_sample_to_storescp() {
    sample_in("-j2k", "-xv", uids::JPEG2000_LOSSLESS, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_analysis_then_restart_delivers_exactly_one_result_set() {
    let findings = reference_findings();
    let received = tempfile::tempdir().expect("dir");
    let modality_port = free_port();
    let _storescp = storescp(modality_port, received.path());
    // Every job waits 2 s after its claim, so the kill lands while the analysis job is running.
    let hold = Duration::from_secs(2);
    let mut node = ServeNode::start(modality_port, None, &[("FIRSTREAD_WORKER__HOLD_FOR", "2s".into())]).await;
    node.push("", "-xe");

    let running = eventually_async(Duration::from_secs(60), || async {
        matches!(node.job("analysis", "").await, Some((s, 1, _)) if s == "running")
    })
    .await;
    assert!(running, "analysis running: {:?}", node.job("analysis", "").await);
    // Half a second into the handler (volume, model): still running, nothing exported yet.
    tokio::time::sleep(hold + Duration::from_millis(500)).await;
    let before = node.job("analysis", "").await;
    assert!(matches!(&before, Some((s, 1, _)) if s == "running"), "still analysing at the kill: {before:?}");
    assert_eq!(node.job("export", "").await, None, "nothing exported before the kill");
    node.kill9();
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM job_runs").fetch_one(&node.pool).await.expect("runs");
    assert_eq!(runs, 0, "the killed attempt recorded no outcome");

    node.spawn(&[]).await;
    node.wait_job_done("export", "MODALITY", Duration::from_secs(180)).await;
    let (_, attempts, _) = node.job("analysis", "").await.expect("analysis job");
    assert_eq!(attempts, 2, "claimed again after the lease expired");
    let outcomes: Vec<(String, String)> =
        sqlx::query_as("SELECT j.kind, r.outcome FROM job_runs r JOIN jobs j ON j.id = r.job_id ORDER BY r.id")
            .fetch_all(&node.pool)
            .await
            .expect("job runs");
    let done = |kind: &str| outcomes.iter().filter(|(k, o)| k == kind && o == "done").count();
    assert_eq!((done("analysis"), done("export")), (1, 2), "{outcomes:?}");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&node.pool).await.expect("jobs");
    assert_eq!(jobs, 3, "one analysis and one export job per part (the SR, the other objects)");
    assert_json_near(&node.analysis_result().await["findings"], findings, "findings");
    // Let a stray second delivery show up before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    check_result_set(&files_under(received.path()), &node.result_objects().await, findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_the_first_read_and_its_json_parses() {
    let findings = reference_findings();
    let out = tempfile::tempdir().expect("dir");
    let demo = |json: bool| {
        let mut cmd = Command::new(firstread_bin());
        cmd.current_dir(repo_root())
            .args(["demo", "--postgres", &admin_url(), "--out"])
            .arg(out.path().join("demo-output"))
            .env_remove("FIRSTREAD_LOG__FILTER")
            .env_remove("RUST_LOG");
        if json {
            cmd.arg("--json");
        }
        let output = run(cmd);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        stdout
    };

    let report: Value = serde_json::from_str(demo(true).trim()).expect("--json prints one JSON object");
    let study = dicom_object::open_file(&sample_series("")[0]).expect("source");
    assert_eq!(report["study_instance_uid"].as_str(), text(&study, tags::STUDY_INSTANCE_UID).as_deref());
    assert_eq!(report["instances_sent"], 30);
    let first_read = &report["first_read"];
    for key in ["lungs", "total", "zones", "severity_score", "extent_class", "pattern", "pattern_rationale"] {
        let want: &Value = &findings[key];
        // the demo prints what it needs; compare those fields
        match (want, &first_read[key]) {
            (Value::Array(w), Value::Array(g)) => {
                assert_eq!(w.len(), g.len(), "{key}");
                for (i, (w, g)) in w.iter().zip(g).enumerate() {
                    for (k, v) in g.as_object().expect("object") {
                        assert_json_near(v, &w[k], &format!("{key}[{i}].{k}"));
                    }
                }
            }
            (w, g) => assert_json_near(g, w, key),
        }
    }
    assert_eq!(first_read["zones"].as_array().map(Vec::len), Some(6));
    assert_eq!(report["severity_score_max"], 30);
    // Timings: stages in order, adding up to the total; the study ready early (early_ready, on by
    // default: one released association, a contiguous series), before stable_after (1 s).
    let stages = &report["stages"];
    let total = stages["total_s"].as_f64().expect("total");
    assert_eq!(report["time_to_result_s"].as_f64(), Some(total));
    let names = [
        "stability_wait_s",
        "queue_pickup_s",
        "volume_s",
        "model_s",
        "pleural_cavity_s",
        "measurements_s",
        "reporting_s",
        "export_s",
    ];
    let sum: f64 = names.iter().map(|n| stages[n].as_f64().unwrap_or(f64::NAN)).sum();
    assert!((sum - total).abs() < 1e-5, "stages add up: {sum} vs {total}");
    let stability = stages["stability_wait_s"].as_f64().expect("stability");
    assert!((0.0..0.9).contains(&stability), "stability wait {stability} s: not early, for stable_after 1 s");
    for n in names {
        assert!(stages[n].as_f64().is_some_and(|v| v >= 0.0), "{n} >= 0: {stages}");
    }
    // Output: the received objects (SR first) and the full result.
    let received = report["received"].as_array().expect("received");
    let kinds: Vec<&str> = received.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(&kinds[..3], ["SR", "SR", "SEG"]);
    assert!(kinds[3..].iter().all(|k| *k == "SC") && kinds.len() >= 4, "{kinds:?}");
    assert_eq!(received[0]["acknowledged_after_s"].as_f64(), Some(total), "timed to the SR's acknowledgement");
    for r in received {
        let path = Path::new(r["path"].as_str().expect("path"));
        assert_eq!(read_part10(path).sop_instance_uid, r["sop_instance_uid"].as_str().expect("uid"));
    }
    let full: Value = serde_json::from_str(
        &std::fs::read_to_string(report["result_json"].as_str().expect("result_json")).expect("first-read.json"),
    )
    .expect("first-read.json parses");
    assert_json_near(&full["findings"], findings, "first-read.json findings");
    // It cleaned up: the temporary database is gone.
    let name = report["database"].as_str().expect("database");
    assert!(name.starts_with("firstread_demo_"));
    let admin = PgPoolOptions::new().max_connections(1).connect(&admin_url()).await.expect("admin");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&admin)
        .await
        .expect("pg_database");
    assert_eq!(left, 0, "temporary database {name} dropped");

    // The human form: the same first read, and the output folder is reused.
    let text_out = demo(false);
    assert!(text_out.contains("FIRST READ"), "{text_out}");
    let score = format!("CT severity score   {}/30", findings["severity_score"]);
    assert!(text_out.contains(&score), "{text_out}");
    assert!(text_out.contains("right lung") && text_out.contains("left lung"), "{text_out}");
    assert!(text_out.contains("Last C-STORE-RSP to the SR acknowledged by DEMO_CT"), "{text_out}");
    let dcm = files_under(&out.path().join("demo-output"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .count();
    assert_eq!(dcm, received.len(), "one run's objects in the output folder");
}
