//! Model versions: a node runs covid19-lung-ct 0.2.4 active (found by default discovery, the
//! highest installed version that is not a shadow) and 0.1.0 as a shadow. The sample CT sent with
//! dcmtk storescu is analysed by both; both result sets are indexed (QIDO-RS shows four SR series,
//! the shadow's marked "SHADOW"); the sender's dcmtk storescp receives only 0.2.4's objects; the
//! webhook only 0.2.4's read; the triage worklist and feedback take the active read; `firstread
//! models compare` and `GET /api/models/compare` give the same figures from the two jobs.

use std::time::Duration;

use dicom_dictionary_std::tags;
use firstread_e2e::*;
use serde_json::Value;

const MODEL: &str = "covid19-lung-ct";

/// (model version, shadow, state, result status, extent class, severity score, involvement %)
type AnalysisRow = (String, bool, String, Option<String>, Option<String>, Option<i32>, Option<f64>);

async fn analyses(node: &TestNode) -> Vec<AnalysisRow> {
    sqlx::query_as(
        "SELECT model_version, shadow, state, result_status, extent_class, severity_score, \
                (result->'findings'->'total'->>'involvement_pct')::float8 \
         FROM jobs WHERE kind = 'analysis' ORDER BY shadow, model_version",
    )
    .fetch_all(&node.pool)
    .await
    .expect("analysis jobs")
}

async fn jobs_of(node: &TestNode, kind: &str) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT model_version, destination, state FROM jobs WHERE kind = $1 ORDER BY id")
        .bind(kind)
        .fetch_all(&node.pool)
        .await
        .expect("jobs")
}

fn text(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim().to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_version_is_analysed_and_indexed_never_sent_and_compared() {
    let peers = ResultPeers::start();
    let (received_dir, hook_out) = (peers.received_dir.as_path(), peers.hook_out.as_path());
    let node = TestNode::start(|c| {
        c.assembly.stable_after = Duration::from_millis(500);
        // the name alone: its highest installed version that is not a shadow
        c.worker.models = Some(vec![MODEL.into()]);
        c.worker.shadow = vec![format!("{MODEL}@0.1.0")];
        peers.wire(c);
    })
    .await;
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "FIRSTREAD", "-aet", "MODALITY", "127.0.0.1", &node.port().to_string()]).args(sample_series(""));
    assert!(run(cmd).status.success(), "sample sent");
    let study = text(&dicom_object::open_file(&sample_series("")[0]).expect("sample"), tags::STUDY_INSTANCE_UID);

    // both versions analysed, the export and the notification of the active one done
    let settled = eventually_async(Duration::from_secs(300), || async {
        let a = analyses(&node).await;
        let export = jobs_of(&node, "export").await;
        let notify = jobs_of(&node, "notify").await;
        a.len() == 2
            && a.iter().all(|j| j.2 == "done")
            && export.iter().any(|j| j.2 == "done")
            && notify.iter().any(|j| j.2 == "done")
    })
    .await;
    let a = analyses(&node).await;
    assert!(settled, "analyses {a:?}, exports {:?}", jobs_of(&node, "export").await);
    assert_eq!(
        a.iter().map(|j| (j.0.as_str(), j.1, j.3.as_deref())).collect::<Vec<_>>(),
        [("0.2.4", false, Some("analysed")), ("0.1.0", true, Some("analysed"))],
        "one job per model version, by role"
    );
    let (active, shadow) = (&a[0], &a[1]);
    for j in [active, shadow] {
        assert!(j.4.is_some() && j.5.is_some() && j.6.is_some(), "class, score and involvement: {j:?}");
    }
    // the result documents say which version and role
    let results: Vec<(String, bool, Value)> = sqlx::query_as(
        "SELECT result->'model'->>'version', (result->>'shadow')::boolean, result->'result_files' FROM jobs \
         WHERE kind = 'analysis' ORDER BY shadow",
    )
    .fetch_all(&node.pool)
    .await
    .expect("results");
    assert_eq!((results[0].0.as_str(), results[0].1), ("0.2.4", false));
    assert_eq!((results[1].0.as_str(), results[1].1), ("0.1.0", true));
    let files = |v: &Value| -> Vec<String> {
        v.as_array().expect("files").iter().filter_map(|f| f.as_str().map(str::to_owned)).collect()
    };
    let (active_files, shadow_files) = (files(&results[0].2), files(&results[1].2));
    assert!(active_files.iter().all(|f| f.contains(&format!("/{MODEL}/0.2.4/"))), "{active_files:?}");
    assert!(shadow_files.iter().all(|f| f.contains(&format!("/{MODEL}/0.1.0/"))), "{shadow_files:?}");
    assert!(shadow_files.len() >= 4, "SR, volumetric SR, SEG and key images of the shadow: {shadow_files:?}");

    // exports and notifications: the active version's only
    let exports = jobs_of(&node, "export").await;
    // the SR, then the other objects
    let export = ("0.2.4".to_owned(), "MODALITY".to_owned(), "done".to_owned());
    assert_eq!(exports, [export.clone(), export]);
    let notifications = jobs_of(&node, "notify").await;
    assert_eq!(notifications, [("0.2.4".to_owned(), "every-read/ward".to_owned(), "done".to_owned())]);

    // the sender got exactly the active version's objects
    let got = files_under(received_dir);
    assert_eq!(got.len(), active_files.len(), "one copy of each 0.2.4 object, none of 0.1.0: {got:?}");
    let mut srs = 0;
    for f in &got {
        let obj = dicom_object::open_file(f).expect("received object");
        let description = text(&obj, tags::SERIES_DESCRIPTION);
        assert!(!description.starts_with("SHADOW"), "{description}");
        if text(&obj, tags::MODALITY) == "SR" {
            srs += 1;
            let versions = obj
                .element(tags::SOFTWARE_VERSIONS)
                .ok()
                .and_then(|e| e.to_multi_str().ok().map(|v| v.to_vec()))
                .unwrap_or_default();
            assert!(versions.iter().any(|v| v.trim() == format!("{MODEL} 0.2.4")), "{versions:?}");
            let mut dump = dcmtk("dsrdump");
            dump.arg(f);
            let out = String::from_utf8_lossy(&run(dump).stdout).into_owned();
            let (ours, shadows) = (format!("{MODEL} 0.2.4"), format!("{MODEL} 0.1.0"));
            assert!(out.contains(&ours) && !out.contains(&shadows), "dsrdump names 0.2.4 only:\n{out}");
        }
    }
    assert_eq!(srs, 2, "the TID 1500 SR and the volumetric SR");

    // the webhook: one message, the active read
    let delivered = received(hook_out);
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["body"]["model"]["version"], "0.2.4", "{}", delivered[0]);

    // both result sets indexed: QIDO-RS lists four SR series, the shadow's marked
    let http = reqwest::Client::new();
    let base = format!("http://{}", node.node.http_addr.expect("HTTP"));
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let r = http.get(&url).bearer_auth(TEST_TOKEN).send().await.expect("request");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, series) = get(format!("/dicom-web/studies/{study}/series?Modality=SR&includefield=0008103E")).await;
    assert_eq!(status, 200, "{series}");
    let mut descriptions: Vec<String> = series
        .as_array()
        .expect("series")
        .iter()
        .map(|s| s["0008103E"]["Value"][0].as_str().unwrap_or_default().to_owned())
        .collect();
    descriptions.sort();
    assert_eq!(descriptions.len(), 4, "{descriptions:?}");
    let marked: Vec<&String> = descriptions.iter().filter(|d| d.starts_with("SHADOW ")).collect();
    assert_eq!(marked.len(), 2, "{descriptions:?}");
    assert!(marked.iter().any(|d| d.contains(&format!("{MODEL} 0.1.0"))), "{descriptions:?}");
    assert!(descriptions.iter().any(|d| d == &format!("firstread first read ({MODEL} 0.2.4)")), "{descriptions:?}");
    let indexed = node
        .count(
            "SELECT count(*) FROM instances i JOIN series s ON s.site = i.site \
             AND s.series_instance_uid = i.series_instance_uid WHERE s.modality = 'SR'",
        )
        .await;
    assert_eq!(indexed, 4, "two SRs per version in the index");

    // the worklist shows the active read
    let (status, page) = get("/triage/api/studies".into()).await;
    assert_eq!(status, 200);
    let row = &page["rows"][0];
    assert_eq!((row["model_version"].as_str(), row["extent_class"].as_str()), (Some("0.2.4"), active.4.as_deref()));
    // feedback on it: the active read's, the radiologist agrees
    let r = http
        .post(format!("{base}/triage/api/feedback"))
        .bearer_auth(TEST_TOKEN)
        .json(&serde_json::json!({
            "study_instance_uid": study, "study_version": 1, "verdict": "agree", "author": "Dr Test"
        }))
        .send()
        .await
        .expect("feedback");
    assert_eq!(r.status().as_u16(), 201);
    let given: Value = r.json().await.expect("feedback row");
    assert_eq!(
        (given["model_version"].as_str(), given["model_extent_class"].as_str()),
        (Some("0.2.4"), active.4.as_deref())
    );

    // the comparison, from the CLI
    let mut cmd = std::process::Command::new(firstread_bin());
    cmd.args(["models", "compare", MODEL, "0.2.4", "0.1.0"]).env("FIRSTREAD_DATABASE__URL", &node.db.url);
    let out = run(cmd);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
    let (a_class, b_class) = (active.4.clone().expect("class"), shadow.4.clone().expect("class"));
    let same = a_class == b_class;
    let row = table.lines().find(|l| l.contains(&study)).unwrap_or_else(|| panic!("a row for the study:\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..5], ["default", study.as_str(), "1", a_class.as_str(), b_class.as_str()], "{table}");
    assert_eq!(
        cells[7..10],
        [&active.5.expect("score").to_string(), &shadow.5.expect("score").to_string(), &a_class],
        "{table}"
    );
    let line =
        |key: &str| table.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key}:\n{table}")).to_owned();
    assert!(line("studies").ends_with(" 1"), "{table}");
    let agreement = if same { "1 of 1 (100.0 %)" } else { "0 of 1 (0.0 %)" };
    assert!(line("extent class agreement").ends_with(agreement), "{table}");
    assert!(line("0.2.4 = radiologist's class").ends_with("1 of 1 with feedback (100.0 %)"), "{table}");
    let inv_diff = (active.6.expect("involvement") - shadow.6.expect("involvement")).abs();
    let score_diff = f64::from((active.5.expect("score") - shadow.5.expect("score")).abs());
    assert!(line("mean |A - B| involvement").contains(&format!("{inv_diff:.2} percentage points")), "{table}");
    assert!(line("mean |A - B| severity score").ends_with(&format!("{score_diff:.2}")), "{table}");
    println!("{table}");

    // the same figures over HTTP, behind the same authentication
    let (status, c) = get(format!("/api/models/compare?name={MODEL}&a=0.2.4&b=0.1.0")).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["studies"], 1);
    assert_eq!(c["class_agreement"]["agree"], i64::from(same));
    assert_eq!(c["rows"][0]["a"]["extent_class"].as_str(), Some(a_class.as_str()));
    assert_eq!(c["rows"][0]["b"]["extent_class"].as_str(), Some(b_class.as_str()));
    assert_eq!(c["rows"][0]["radiologist_class"].as_str(), Some(a_class.as_str()));
    assert_eq!(c["a_agrees_with_radiologist"]["pct"], 100.0);
    assert_eq!(c["b_agrees_with_radiologist"]["agree"], i64::from(same));
    let http_inv = c["mean_abs_diff_involvement_pct"].as_f64().expect("involvement");
    assert!((http_inv - inv_diff).abs() < 1e-3, "{http_inv} against {inv_diff}");
    assert_eq!(c["mean_abs_diff_severity_score"].as_f64(), Some(score_diff));
    let unauthenticated =
        http.get(format!("{base}/api/models/compare?name={MODEL}&a=0.2.4&b=0.1.0")).send().await.expect("request");
    assert_eq!(unauthenticated.status().as_u16(), 401);
    let (status, _) = get(format!("/api/models/compare?name={MODEL}&a=0.2.4&b=0.2.4")).await;
    assert_eq!(status, 400, "the same version twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_to_start_with_versions_or_a_device_that_cannot_run() {
    let db = TestDb::create().await;
    let root = tempfile::tempdir().expect("dir");
    let start = |extra: &[(&'static str, &str)]| {
        let mut cmd = std::process::Command::new(firstread_bin());
        cmd.arg("serve").env("FIRSTREAD_LOG__FILTER", "error");
        for (k, v) in node_env(&db, root.path(), free_port()) {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("firstread serve");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while child.try_wait().expect("wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the node started with {extra:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = child.wait_with_output().expect("output");
        assert!(!out.status.success(), "refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let models = repo_root().join("models").display().to_string();
    let both = start(&[
        ("FIRSTREAD_WORKER__MODELS", "[\"covid19-lung-ct@0.1.0\"]"),
        ("FIRSTREAD_WORKER__SHADOW", "[\"covid19-lung-ct@0.1.0\"]"),
    ]);
    assert!(both.contains("both active") && both.contains(&format!("{models}/covid19-lung-ct/0.1.0")), "{both}");
    let unknown = start(&[("FIRSTREAD_WORKER__SHADOW", "[\"covid19-lung-ct@0.0.9\"]")]);
    assert!(
        unknown.contains(&format!("{models}/covid19-lung-ct/0.0.9"))
            && unknown.contains("0.1.0, 0.2.1, 0.2.2, 0.2.3, 0.2.4"),
        "{unknown}"
    );
    let twice = start(&[("FIRSTREAD_WORKER__MODELS", "[\"covid19-lung-ct@0.1.0\", \"covid19-lung-ct\"]")]);
    assert!(twice.contains("two versions of covid19-lung-ct active"), "{twice}");
    // a GPU asked for where there is none (the CI machine has no CUDA build or device)
    let gpu = start(&[("FIRSTREAD_WORKER__DEVICE", "cuda")]);
    assert!(
        gpu.contains("worker.device = \"cuda:0\"") && gpu.contains("device = \"cpu\""),
        "says which setting and what to do: {gpu}"
    );
    let typo = start(&[("FIRSTREAD_WORKER__DEVICE", "gpu")]);
    assert!(typo.contains("\"cuda:N\""), "{typo}");
}
