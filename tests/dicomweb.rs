//! DICOMweb end to end: a real client (Python `dicomweb-client`) stores the sample CT with
//! STOW-RS, searches and retrieves it (tests/peers/dicomweb_conformance.py); the node's result
//! objects appear through QIDO-RS/WADO-RS; `/metrics` parses with the Prometheus text-format
//! parser and counts what was sent; health endpoints and authentication.

use std::process::Command;
use std::time::Duration;

use firstread::node::Roles;
use firstread_e2e::{
    dcmtk, eventually_async, repo_root, run, sample_series, serve_with_http, TestDb, TestNode, TEST_TOKEN,
};

/// Runs a Python snippet with arguments; returns stdout, panicking with stderr on failure.
fn python(script: &str, args: &[&str]) -> String {
    let out = run({
        let mut c = Command::new("python3");
        c.arg("-c").arg(script).args(args);
        c
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "python failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// GET with the test token; returns (status, body).
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let out = python(
        "import sys, json, requests\n\
         h = {'Authorization': 'Bearer ' + sys.argv[2]} if sys.argv[2] else {}\n\
         try:\n\
         \x20   r = requests.get(sys.argv[1], headers=h, timeout=30)\n\
         \x20   print(json.dumps({'status': r.status_code, 'body': r.text}))\n\
         except requests.ConnectionError as e:\n\
         \x20   print(json.dumps({'status': 0, 'body': str(e)}))",
        &[url, token.unwrap_or("")],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    (v["status"].as_u64().unwrap_or(0) as u16, v["body"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicomweb_client_stores_searches_and_retrieves_the_sample_byte_identically() {
    // listener only: no analysis, so the study holds exactly what the client stored
    let node = TestNode::start_roles(Roles { listen: true, work: false }, |_| {}).await;
    let data = repo_root().join("data/ct/lung-dx-a0002-b40f");
    let out = run({
        let mut c = Command::new("python3");
        c.arg(repo_root().join("tests/peers/dicomweb_conformance.py"))
            .args(["--url", &node.dicomweb(), "--token", TEST_TOKEN])
            .arg("--data")
            .arg(&data)
            .arg("--storage")
            .arg(node.dir.path());
        c
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all DICOMweb checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // STOW-RS went through the same index and study assembly as C-STORE
    assert_eq!(node.count("SELECT count(*) FROM instances WHERE calling_ae_title = 'STOW-RS'").await, 31);
    assert_eq!(node.count("SELECT count(*) FROM studies WHERE analysable").await, 2);
    assert_eq!(node.count("SELECT count(*) FROM instances WHERE metadata IS NULL").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_served_and_metrics_count_what_was_sent() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (_node, dimse, http) = serve_with_http(&db, dir.path());
    let root = format!("http://127.0.0.1:{http}");
    let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
    let up =
        eventually_async(Duration::from_secs(60), || async { get(&format!("{root}/readyz"), None).0 == 200 }).await;
    assert!(up, "node did not become ready");
    assert_eq!(get(&format!("{root}/healthz"), None).0, 200);
    assert_eq!(get(&format!("{root}/metrics"), None).0, 401, "metrics need the token");

    // 30 instances over DICOM, one over STOW-RS
    let files = sample_series("");
    let out = run({
        let mut c = dcmtk("storescu");
        c.args(["-aec", "FIRSTREAD", "-aet", "MODALITY", "127.0.0.1", &dimse.to_string()]).args(&files);
        c
    });
    assert!(out.status.success(), "storescu: {}", String::from_utf8_lossy(&out.stderr));
    python(
        "import sys, copy, pydicom\n\
         from dicomweb_client.api import DICOMwebClient\n\
         ds = pydicom.dcmread(sys.argv[2])\n\
         ds.StudyInstanceUID = pydicom.uid.generate_uid(); ds.SeriesInstanceUID = pydicom.uid.generate_uid()\n\
         ds.SOPInstanceUID = pydicom.uid.generate_uid(); ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID\n\
         c = DICOMwebClient(sys.argv[1], headers={'Authorization': 'Bearer ' + sys.argv[3]})\n\
         r = c.store_instances([ds]); assert len(r.ReferencedSOPSequence) == 1",
        &[&format!("{root}/dicom-web"), files[0].to_str().expect("path"), TEST_TOKEN],
    );

    // both studies analysed (the single-slice one is refused, which is a finished analysis)
    let done = eventually_async(Duration::from_secs(180), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE kind = 'analysis' AND state = 'done'")
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
            == 2
    })
    .await;
    assert!(done, "analyses did not finish");
    let study: String = sqlx::query_scalar(
        "SELECT study_instance_uid FROM jobs WHERE kind = 'analysis' AND result->>'status' = 'analysed'",
    )
    .fetch_one(&pool)
    .await
    .expect("analysed study");

    // indexing the result objects did not move the study's stability time
    let moved: bool = sqlx::query_scalar(
        "SELECT s.stable_at >= (SELECT min(i.received_at) FROM instances i \
         WHERE i.study_instance_uid = s.study_instance_uid AND i.calling_ae_title = 'FIRSTREAD') \
         FROM studies s WHERE s.study_instance_uid = $1",
    )
    .bind(&study)
    .fetch_one(&pool)
    .await
    .expect("stable_at");
    assert!(!moved, "result objects pushed stable_at");

    // the result objects are series of the study, through QIDO-RS and WADO-RS
    let (status, body) = get(&format!("{root}/dicom-web/studies/{study}/series"), Some(TEST_TOKEN));
    assert_eq!(status, 200, "{body}");
    let series: serde_json::Value = serde_json::from_str(&body).expect("series JSON");
    let mut modalities: Vec<String> = series
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["00080060"]["Value"][0].as_str().map(str::to_owned))
        .collect();
    modalities.sort();
    assert_eq!(modalities, ["CT", "OT", "SEG", "SR", "SR"], "{body}");
    let sr = series
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["00200011"]["Value"][0] == 9001)
        .expect("the first-read SR series (9001)");
    let sr_uid = sr["0020000E"]["Value"][0].as_str().expect("uid");
    let (status, body) = get(&format!("{root}/dicom-web/studies/{study}/series/{sr_uid}/metadata"), Some(TEST_TOKEN));
    assert_eq!(status, 200);
    let metadata: serde_json::Value = serde_json::from_str(&body).expect("metadata");
    // the SR content tree is in the metadata (OHIF reads it from there)
    assert_eq!(metadata[0]["0040A040"]["Value"][0], "CONTAINER", "{body}");
    assert!(metadata[0]["0040A730"]["Value"].as_array().is_some_and(|c| !c.is_empty()));

    // /metrics parses with Prometheus' own text-format parser and counts what was sent
    let (status, text) = get(&format!("{root}/metrics"), Some(TEST_TOKEN));
    assert_eq!(status, 200);
    let parsed = python(
        "import sys, json\n\
         from prometheus_client.parser import text_string_to_metric_families\n\
         out = {}\n\
         for fam in text_string_to_metric_families(sys.argv[1]):\n\
         \x20   for s in fam.samples:\n\
         \x20       key = s.name + '{' + ','.join(f'{k}={v}' for k, v in sorted(s.labels.items())) + '}'\n\
         \x20       out[key] = s.value\n\
         print(json.dumps(out))",
        &[&text],
    );
    let m: serde_json::Value = serde_json::from_str(parsed.trim()).expect("parsed metrics");
    let value = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("metric {k} missing in {m}"));
    assert_eq!(value("firstread_instances_received_total{site=default,via=dimse}"), 30.0);
    assert_eq!(value("firstread_instances_received_total{site=default,via=stow-rs}"), 1.0);
    assert_eq!(value("firstread_associations_total{site=default}"), 1.0);
    let sent_bytes: u64 = files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
    assert!(value("firstread_received_bytes_total{site=default}") >= 0.9 * sent_bytes as f64);
    assert_eq!(value("firstread_jobs{kind=analysis,state=done}"), 2.0);
    assert_eq!(value("firstread_studies{site=default,state=analysed}"), 2.0);
    assert_eq!(value("firstread_stage_seconds_count{stage=model}"), 1.0);
    assert_eq!(value("firstread_stage_seconds_count{stage=reporting}"), 1.0);
    assert!(value("firstread_stage_seconds_sum{stage=model}") > 0.0);
    // every instance stored passed each step of ingest once, and each took time
    for step in ["begin", "receive", "finish", "place", "index"] {
        assert_eq!(value(&format!("firstread_ingest_seconds_count{{step={step}}}")), 31.0, "{step}");
        assert!(value(&format!("firstread_ingest_seconds_sum{{step={step}}}")) > 0.0, "{step}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_frames_are_sent_as_stored_or_decoded_to_native() {
    let node = TestNode::start_roles(Roles { listen: true, work: false }, |_| {}).await;
    // the JPEG-LS lossless copy of the sample, received over DICOM
    let files = sample_series("-jpegls");
    let out = run({
        let mut c = dcmtk("storescu");
        c.args(["-xt", "-aec", "FIRSTREAD", "127.0.0.1", &node.port().to_string()]).args(&files[..2]);
        c
    });
    assert!(out.status.success(), "storescu: {}", String::from_utf8_lossy(&out.stderr));
    let native = repo_root().join("data/ct/lung-dx-a0002-b40f").join(files[0].file_name().expect("name"));
    let report = python(
        "import sys, json, requests, pydicom\n\
         from pydicom.encaps import generate_fragmented_frames\n\
         url, token, compressed, native = sys.argv[1:5]\n\
         c = pydicom.dcmread(compressed); n = pydicom.dcmread(native)\n\
         base = f'{url}/studies/{c.StudyInstanceUID}/series/{c.SeriesInstanceUID}/instances/{c.SOPInstanceUID}/frames/1'\n\
         h = {'Authorization': 'Bearer ' + token}\n\
         from dicomweb_client.api import DICOMwebClient\n\
         cl = DICOMwebClient(url, headers=h)\n\
         stored = cl.retrieve_instance_frames(c.StudyInstanceUID, c.SeriesInstanceUID, c.SOPInstanceUID, [1],\n\
         \x20   media_types=(('application/octet-stream', '*'),))[0]\n\
         decoded = cl.retrieve_instance_frames(c.StudyInstanceUID, c.SeriesInstanceUID, c.SOPInstanceUID, [1],\n\
         \x20   media_types=('application/octet-stream',))[0]\n\
         fragment = b''.join(next(generate_fragmented_frames(c.PixelData)))\n\
         r = requests.get(base, headers={**h, 'Accept': 'multipart/related; type=application/octet-stream; transfer-syntax=*'})\n\
         print(json.dumps({'as_stored': stored == fragment, 'native': decoded == n.PixelData,\n\
         \x20   'stored_type': r.headers.get('content-type', ''), 'part_has_syntax': c.file_meta.TransferSyntaxUID in r.text[:400]}))",
        &[&node.dicomweb(), TEST_TOKEN, files[0].to_str().expect("path"), native.to_str().expect("path")],
    );
    let v: serde_json::Value = serde_json::from_str(report.trim()).expect("json");
    assert_eq!(v["as_stored"], true, "{v}");
    assert_eq!(v["native"], true, "decoded JPEG-LS frame equals the uncompressed sample's pixels: {v}");
    assert_eq!(v["part_has_syntax"], true, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_viewer_session_and_viewer_files() {
    let node = TestNode::start_roles(Roles { listen: true, work: false }, |c| {
        c.http.cors_allowed_origins = vec!["https://viewer.example".into()];
        c.http.max_request_bytes = 200_000;
    })
    .await;
    let base = node.dicomweb().trim_end_matches("/dicom-web").to_owned();
    let report = python(
        "import sys, json, requests\n\
         base, token = sys.argv[1:3]\n\
         out = {}\n\
         pre = requests.options(base + '/dicom-web/studies', headers={'Origin': 'https://viewer.example',\n\
         \x20   'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'authorization'})\n\
         out['cors_allowed'] = pre.headers.get('access-control-allow-origin')\n\
         other = requests.options(base + '/dicom-web/studies', headers={'Origin': 'https://evil.example',\n\
         \x20   'Access-Control-Request-Method': 'GET'})\n\
         out['cors_other'] = other.headers.get('access-control-allow-origin')\n\
         s = requests.Session()\n\
         bad = s.get(base + '/login', params={'token': 'wrong', 'next': '/viewer/'}, allow_redirects=False)\n\
         out['bad_login'] = [bad.status_code, 'set-cookie' in bad.headers]\n\
         out['before_login'] = s.get(base + '/dicom-web/studies').status_code\n\
         r = s.get(base + '/login', params={'token': token, 'next': '//evil.example/'}, allow_redirects=False)\n\
         out['login'] = [r.status_code, r.headers.get('location'), 'HttpOnly' in r.headers.get('set-cookie', '')]\n\
         out['after_login'] = s.get(base + '/dicom-web/studies').status_code\n\
         v = requests.get(base + '/viewer/viewer?StudyInstanceUIDs=1.2.3')\n\
         out['viewer'] = [v.status_code, v.headers.get('cross-origin-embedder-policy'), '<html' in v.text.lower()]\n\
         big = requests.post(base + '/dicom-web/studies', data=b'--b\\r\\nContent-Type: application/dicom\\r\\n\\r\\n' + bytes(300000),\n\
         \x20   headers={'Authorization': 'Bearer ' + token, 'Content-Type': 'multipart/related; type=application/dicom; boundary=b'})\n\
         out['too_large'] = big.status_code\n\
         cfg = requests.get(base + '/viewer/app-config.js')\n\
         out['config'] = [cfg.status_code, \"'/dicom-web'\" in cfg.text, \"routerBasename: '/viewer'\" in cfg.text, token in cfg.text]\n\
         print(json.dumps(out))",
        &[&base, TEST_TOKEN],
    );
    let v: serde_json::Value = serde_json::from_str(report.trim()).expect("json");
    assert_eq!(v["cors_allowed"], "https://viewer.example", "{v}");
    assert_eq!(v["cors_other"], serde_json::Value::Null, "{v}");
    assert_eq!(v["bad_login"], serde_json::json!([401, false]), "{v}");
    assert_eq!(v["before_login"], 401, "{v}");
    // an off-site `next` is not followed: the viewer is
    assert_eq!(v["login"], serde_json::json!([303, "/viewer/", true]), "{v}");
    assert_eq!(v["after_login"], 200, "{v}");
    assert_eq!(v["too_large"], 413, "a STOW-RS body over http.max_request_bytes: {v}");
    // the viewer (installed by scripts/bootstrap.sh) with cross-origin isolation; its app config
    // points at this server's DICOMweb root and never carries the token
    assert_eq!(v["viewer"], serde_json::json!([200, "require-corp", true]), "{v}");
    assert_eq!(v["config"], serde_json::json!([200, true, true, false]), "{v}");
}
