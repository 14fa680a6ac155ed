//! Results back to the sender: after analysis, the SR, volumetric SR, SEG and key images are sent
//! with C-STORE to the originating AE (found by calling AE title in the destination table), with
//! retries through export jobs. Real peers: dcmtk storescp and a pynetdicom SCP that refuses.

use std::process::Stdio;
use std::time::Duration;

use dicom_dictionary_std::tags;
use firstread_dimse::Destination;
use firstread_e2e::*;

async fn node_exporting_to(port: u16) -> TestNode {
    TestNode::start(move |c| {
        c.assembly.stable_after = Duration::from_millis(500);
        c.export.destinations =
            vec![Destination { ae_title: "MODALITY".into(), host: "127.0.0.1".into(), port, tls: None }];
        c.export.backoff_base = Duration::from_millis(500);
        c.export.backoff_max = Duration::from_secs(2);
        c.export.max_attempts = 3;
    })
    .await
}

fn push_sample(node: &TestNode) {
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "FIRSTREAD", "-aet", "MODALITY", "127.0.0.1", &node.port().to_string()]).args(sample_series(""));
    assert!(run(cmd).status.success(), "sample sent");
}

async fn result_files(node: &TestNode) -> Vec<String> {
    // the analysis job completes just after it queues its last export part, which may finish first
    let query = || async {
        sqlx::query_scalar::<_, serde_json::Value>(
            "SELECT result->'result_files' FROM jobs WHERE kind = 'analysis' AND state = 'done'",
        )
        .fetch_optional(&node.pool)
        .await
        .expect("result")
    };
    assert!(eventually_async(Duration::from_secs(30), || async { query().await.is_some() }).await, "analysis done");
    let v = query().await.unwrap_or_default();
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_go_back_to_the_sender_once_even_when_it_is_down_at_first() {
    let port = free_port();
    let received = tempfile::tempdir().expect("dir");
    let node = node_exporting_to(port).await;
    push_sample(&node);
    // The sender's storescp is down: the export fails and is retried.
    let failed_once = eventually_async(Duration::from_secs(90), || async {
        let jobs = node.export_jobs().await;
        jobs.len() == 2 && jobs.iter().all(|(_, s, a, _)| s == "queued" && *a >= 1)
    })
    .await;
    assert!(failed_once, "both parts attempted while the destination is down: {:?}", node.export_jobs().await);
    let _scp = storescp(port, received.path());
    let done = eventually_async(Duration::from_secs(30), || node.exports_are("done")).await;
    assert!(done, "export done once the destination is up: {:?}", node.export_jobs().await);
    // the SR's part was queued (and its files listed) before the other objects were written
    let parts: Vec<(String, serde_json::Value, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT part, payload->'files', created_at FROM jobs WHERE kind = 'export' ORDER BY created_at")
            .fetch_all(&node.pool)
            .await
            .expect("parts");
    assert_eq!(parts.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["sr", "objects"]);
    let sr_files = parts[0].1.as_array().cloned().unwrap_or_default();
    assert_eq!(sr_files.len(), 1, "{sr_files:?}");
    assert!(sr_files[0].as_str().is_some_and(|f| f.ends_with("/00-sr.dcm")), "{sr_files:?}");
    let seg_written = std::fs::metadata(
        node.dir.path().join(
            parts[1]
                .1
                .as_array()
                .and_then(|a| a.iter().find_map(|f| f.as_str().filter(|f| f.ends_with("-seg.dcm"))))
                .expect("SEG listed"),
        ),
    )
    .and_then(|m| m.modified())
    .expect("SEG file");
    assert!(
        std::time::SystemTime::from(parts[0].2) <= seg_written,
        "the SR's export was queued at {} before the SEG was written",
        parts[0].2
    );

    let files = result_files(&node).await;
    assert!(files.len() >= 4, "SR, volumetric SR, SEG and at least one key image: {files:?}");
    let got = files_under(received.path());
    assert_eq!(got.len(), files.len(), "exactly one copy of each object: {got:?}");
    // Same patient and study as the source, one series per kind.
    let source = dicom_object::open_file(&sample_series("")[0]).expect("source");
    let text = |o: &dicom_object::DefaultDicomObject, t| {
        o.element(t).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim().to_owned())
    };
    let mut kinds = std::collections::BTreeMap::new();
    for f in &got {
        let obj = dicom_object::open_file(f).expect("received object");
        assert_eq!(text(&obj, tags::STUDY_INSTANCE_UID), text(&source, tags::STUDY_INSTANCE_UID));
        assert_eq!(text(&obj, tags::PATIENT_ID), text(&source, tags::PATIENT_ID));
        kinds.entry(text(&obj, tags::SERIES_INSTANCE_UID)).or_insert_with(Vec::new).push(text(&obj, tags::MODALITY));
    }
    for (series, modalities) in &kinds {
        let first = &modalities[0];
        assert!(modalities.iter().all(|m| m == first), "one kind per series {series:?}: {modalities:?}");
    }
    assert_eq!(kinds.len(), 4, "SR, volumetric SR, SEG, SC series");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_refuses_ends_dead_with_its_reason() {
    let port = free_port();
    let out = tempfile::tempdir().expect("dir");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(repo_root().join("tests/peers/scp.py"))
        .args(["--port", &port.to_string(), "--ae", "MODALITY", "--statuses", "A700", "--out"])
        .arg(out.path().join("summary.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _scp = Peer(cmd.spawn().expect("scp.py"));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "scp.py listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    let node = node_exporting_to(port).await;
    push_sample(&node);
    let dead = eventually_async(Duration::from_secs(120), || node.exports_are("dead")).await;
    let jobs = node.export_jobs().await;
    assert!(dead, "{jobs:?}");
    for (part, _, attempts, error) in jobs {
        assert_eq!(attempts, 3, "{part}");
        assert!(error.as_deref().is_some_and(|e| e.contains("A700")), "{part}: {error:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orthanc_files_the_results_under_the_same_patient_and_study() {
    let dir = tempfile::tempdir().expect("dir");
    let (dicom_port, http_port) = (free_port(), free_port());
    let _orthanc = orthanc(dir.path(), dicom_port, http_port);
    // The PACS already holds the CT (auto-routed to it and to firstread).
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "ORTHANC", "127.0.0.1", &dicom_port.to_string()]).args(sample_series(""));
    assert!(run(cmd).status.success(), "CT stored in Orthanc");

    let node = TestNode::start(move |c| {
        c.assembly.stable_after = Duration::from_millis(500);
        c.export.destinations =
            vec![Destination { ae_title: "ORTHANC".into(), host: "127.0.0.1".into(), port: dicom_port, tls: None }];
        c.export.always = vec!["ORTHANC".into()];
    })
    .await;
    push_sample(&node);
    let done = eventually_async(Duration::from_secs(120), || node.exports_are("done")).await;
    assert!(done, "export to Orthanc done: {:?}", node.export_jobs().await);
    let files = result_files(&node).await;

    let patients = orthanc_get(http_port, "/patients");
    assert_eq!(patients.as_array().map(Vec::len), Some(1), "one patient: {patients}");
    let studies = orthanc_get(http_port, "/studies");
    assert_eq!(studies.as_array().map(Vec::len), Some(1), "one study: {studies}");
    let study_id = studies[0].as_str().expect("study id");
    let series = orthanc_get(http_port, &format!("/studies/{study_id}/series?expand"));
    let mut modalities: Vec<String> = series
        .as_array()
        .expect("series")
        .iter()
        .filter_map(|s| s["MainDicomTags"]["Modality"].as_str().map(str::to_owned))
        .collect();
    modalities.sort();
    assert_eq!(modalities, vec!["CT", "OT", "SEG", "SR", "SR"], "CT, key images, SEG and two SRs in the one study");
    let instances = orthanc_get(http_port, &format!("/studies/{study_id}/instances"));
    assert_eq!(instances.as_array().map(Vec::len), Some(30 + files.len()), "CT + every result object, once");
}
