//! The triage page in headless Chromium (`tests/browser/triage.mjs`, playwright-core): three
//! studies of different severity made from the sample and sent over DIMSE appear on `/triage`
//! ranked by criticality without a reload, passing through their statuses; feedback given on the
//! page is in the database, in `GET /triage/api/feedback` and in `firstread feedback export`; the
//! row opens the viewer on its study.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use firstread_e2e::*;
use serde_json::Value;

fn storescu(port: u16, files: &[std::path::PathBuf]) {
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "FIRSTREAD", "-aet", "CT_ER_2", "127.0.0.1", &port.to_string()]).args(files);
    assert!(run(cmd).status.success(), "study sent");
}

const PASSWORD: &str = "a long enough passphrase";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_studies_rank_by_criticality_live_and_take_feedback() {
    let node = TestNode::start(|c| {
        c.assembly.stable_after = Duration::from_secs(1);
    })
    .await;
    let http = node.node.http_addr.expect("http");
    // the radiologist signs in with their own account
    firstread_users::add(&node.pool, "dr.reader", firstread_users::Role::Radiologist, Some(PASSWORD), &[])
        .await
        .expect("user added");
    let base = format!("http://{http}");
    let dir = tempfile::tempdir().expect("dir");
    // none or minimal: the sample; ground glass over the right lower half; ground glass everywhere
    let (minimal, minimal_files) =
        sample_study(&dir.path().join("a"), &Patient { name: "Alpha^Ann", id: "P-A", accession: "ACC-A" }, |_, _| {
            false
        });
    let (lower, lower_files) =
        sample_study(&dir.path().join("b"), &Patient { name: "Beta^Bob", id: "P-B", accession: "ACC-B" }, |z, x| {
            z < 0.5 && x < 0.5
        });
    let (everywhere, everywhere_files) =
        sample_study(&dir.path().join("c"), &Patient { name: "Gamma^Gus", id: "P-C", accession: "ACC-C" }, |_, _| true);
    // the sickest is scanned prone (the images unchanged): its row says the result's caution
    for file in &everywhere_files {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        let mut obj = dicom_object::open_file(file).expect("instance");
        obj.put(DataElement::new(dicom_dictionary_std::tags::PATIENT_POSITION, VR::CS, PrimitiveValue::from("HFP")));
        obj.write_to_file(file).expect("write");
    }

    let shots = repo_root().join("target/triage-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let mut browser = Command::new("node")
        .arg(repo_root().join("tests/browser/triage.mjs"))
        .args(["--base", &base, "--user", "dr.reader", "--password", PASSWORD, "--expect", "3"])
        .args(["--timeout-ms", "300000", "--out"])
        .arg(&shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut lines = std::io::BufReader::new(browser.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(first, "ready", "the page opened and went live");

    // sent one after the other while the page watches
    let port = node.port();
    for files in [&minimal_files, &everywhere_files, &lower_files] {
        let files = files.clone();
        tokio::task::spawn_blocking(move || storescu(port, &files)).await.expect("send");
    }
    let summary_line = tokio::task::spawn_blocking(move || {
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = browser.wait();
        line
    })
    .await
    .expect("browser");
    let summary: Value = serde_json::from_str(&summary_line)
        .unwrap_or_else(|e| panic!("triage.mjs printed no JSON ({e}): {summary_line}"));
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert_eq!(summary["sign_in_url"], format!("{base}/sign-in"), "the page asks for sign-in without a session");
    assert_eq!(summary["navigations"], 0, "no reload: {summary:#}");
    assert_eq!(summary["console_errors"], serde_json::json!([]), "{summary:#}");
    assert_eq!(summary["failed_requests"], serde_json::json!([]), "{summary:#}");

    // the order on the page: critical first, by class then score
    let class_of = |study: &str| -> String {
        let row = summary["order"].as_array().and_then(|o| o.iter().find(|r| r["study"] == study)).cloned();
        row.and_then(|r| r["class"].as_str().map(str::to_owned)).unwrap_or_default()
    };
    let order: Vec<&str> =
        summary["order"].as_array().expect("order").iter().filter_map(|r| r["study"].as_str()).collect();
    assert_eq!(order, vec![everywhere.as_str(), lower.as_str(), minimal.as_str()], "{summary:#}");
    let classes = [class_of(&everywhere), class_of(&lower), class_of(&minimal)];
    assert_eq!(classes[2], "none_or_minimal", "{classes:?}");
    assert!(matches!(classes[0].as_str(), "severe" | "critical"), "{classes:?}");
    assert!(matches!(classes[1].as_str(), "moderate" | "extensive"), "{classes:?}");
    // the prone study's row carries its caution, in the result's words; the others none
    let caution_of = |study: &str| -> Option<String> {
        let row = summary["order"].as_array().and_then(|o| o.iter().find(|r| r["study"] == study)).cloned();
        row.and_then(|r| r["caution"].as_str().map(str::to_owned))
    };
    let prone = caution_of(&everywhere).unwrap_or_default();
    assert!(prone.starts_with("Patient Position HFP (prone: the dependent side is anterior)"), "{summary:#}");
    assert_eq!((caution_of(&lower), caution_of(&minimal)), (None, None), "{summary:#}");
    // the page's classes are the analyses'
    for (study, class) in [(&everywhere, &classes[0]), (&lower, &classes[1]), (&minimal, &classes[2])] {
        let db: String = sqlx::query_scalar(
            "SELECT result->'findings'->>'extent_class' FROM jobs WHERE kind = 'analysis' AND study_instance_uid = $1",
        )
        .bind(study)
        .fetch_one(&node.pool)
        .await
        .expect("analysis");
        assert_eq!(&db, class);
    }
    // statuses as they progressed: in life order, ending done; some seen before done
    let life = ["receiving", "waiting", "queued", "analysing", "done"];
    let mut before_done = 0;
    for study in [&minimal, &lower, &everywhere] {
        let seen: Vec<&str> =
            summary["seen"][study.as_str()].as_array().expect("seen").iter().filter_map(Value::as_str).collect();
        let ranks: Vec<usize> = seen.iter().map(|s| life.iter().position(|l| l == s).expect("known status")).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{study}: {seen:?}");
        assert_eq!(seen.last(), Some(&"done"));
        before_done += seen.len() - 1;
    }
    assert!(before_done >= 3, "the page showed the studies before they were done: {:#}", summary["seen"]);

    // the row opens the viewer on its study
    assert_eq!(summary["viewer_status"], 200, "{summary:#}");
    let url = summary["viewer_url"].as_str().unwrap_or_default();
    assert!(url.contains("/viewer/viewer?") && url.contains(&format!("StudyInstanceUIDs={everywhere}")), "{url}");

    // feedback: in the database, over HTTP and from the CLI
    let rows: Vec<(String, i32, String, Option<String>, String, String)> = sqlx::query_as(
        "SELECT study_instance_uid, study_version, verdict, extent_class, comment, author FROM feedback ORDER BY id",
    )
    .fetch_all(&node.pool)
    .await
    .expect("feedback");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows[0],
        (
            everywhere.clone(),
            1,
            "disagree".into(),
            Some("severe".into()),
            "dense posterior consolidation under-read".into(),
            // the signed-in user, not the name typed on the page
            "dr.reader".into()
        )
    );
    assert_eq!((rows[1].0.as_str(), rows[1].2.as_str(), rows[1].3.as_deref()), (lower.as_str(), "agree", None));
    let shown = summary["feedback_shown"].as_array().expect("shown");
    assert!(shown[0].as_str().is_some_and(|s| s.contains("disagree") && s.contains("severe")), "{shown:?}");

    let client = reqwest::Client::new();
    let json: Value = client
        .get(format!("{base}/triage/api/feedback?format=json"))
        .bearer_auth(TEST_TOKEN)
        .send()
        .await
        .expect("export")
        .json()
        .await
        .expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(2));
    assert_eq!(json[0]["verdict"], "disagree");
    assert_eq!(json[0]["model_extent_class"].as_str(), Some(classes[0].as_str()));
    let unauthenticated = client.get(format!("{base}/triage/api/feedback")).send().await.expect("export");
    assert_eq!(unauthenticated.status().as_u16(), 401);

    let out = run({
        let mut c = Command::new(firstread_bin());
        c.args(["feedback", "export", "--format", "csv"]).env("FIRSTREAD_DATABASE__URL", &node.db.url);
        c
    });
    let csv = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "header + 2: {csv}");
    assert!(lines[0].starts_with("id,study_instance_uid,study_version,model,model_version"), "{csv}");
    assert!(lines[1].contains(&everywhere) && lines[1].contains(",disagree,severe,"), "{csv}");
    assert!(lines[2].contains(&lower) && lines[2].contains(",agree,"), "{csv}");
}

/// A fresh database with the node's schema, for the worklist's query alone (results written
/// straight into it, as the analysis jobs record them).
async fn worklist_db() -> (TestDb, sqlx::PgPool) {
    let db = TestDb::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.expect("db");
    firstread_store::index::MIGRATOR.run(&pool).await.expect("migrations");
    (db, pool)
}

/// The worklist's first page, unfiltered, every site.
async fn whole_worklist(pool: &sqlx::PgPool) -> firstread_pages::worklist::Page {
    firstread_pages::worklist::page(pool, &Default::default(), &firstread_sites::Scope::Every).await.expect("page")
}

/// An analysable study, queued at version 1, its last image `waited_min` minutes ago.
async fn insert_study(pool: &sqlx::PgPool, study: &str, waited_min: i32) {
    sqlx::query(
        "INSERT INTO studies (study_instance_uid, calling_ae_title, called_ae_title, peer_address, analysable, \
             queued_version, last_image_at) VALUES ($1, 'CT', 'FIRSTREAD', '127.0.0.1', true, 1, \
             now() - make_interval(mins => $2))",
    )
    .bind(study)
    .bind(waited_min)
    .execute(pool)
    .await
    .expect("study");
}

/// A first read whose class the method's error leaves open ("none or minimal, possibly
/// moderate") ranks with the moderate ones: the sickest first. Results as the analysis job
/// records them (`result.findings`), straight into the database, through the page's query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_possible_higher_class_ranks_with_that_class() {
    let (_db, pool) = worklist_db().await;
    // (study, class, highest class the error allows (None: recorded before it was), score)
    let rows = [
        ("2.25.1", "moderate", Some("moderate"), 5),
        ("2.25.2", "none_or_minimal", Some("moderate"), 8),
        ("2.25.3", "none_or_minimal", Some("none_or_minimal"), 9),
        ("2.25.4", "none_or_minimal", None, 10),
        ("2.25.5", "moderate", Some("extensive"), 3),
    ];
    for (study, class, highest, score) in rows {
        insert_study(&pool, study, 0).await;
        let mut findings = serde_json::json!({ "extent_class": class, "severity_score": score,
            "total": { "involvement_pct": 9.5 } });
        if study == "2.25.4" {
            findings["cautions"] = serde_json::json!([PRONE]);
        }
        if let Some(highest) = highest {
            findings["uncertainty"] = serde_json::json!({ "involvement_pct": [7.4, 11.2],
                "extent_class": [class, highest], "severity_score": [score - 1, score + 1] });
        }
        sqlx::query(
            "INSERT INTO jobs (kind, study_instance_uid, study_version, model, max_attempts, state, result) \
             VALUES ('analysis', $1, 1, 'covid19-lung-ct', 3, 'done', $2)",
        )
        .bind(study)
        .bind(serde_json::json!({ "status": "analysed", "findings": findings }))
        .execute(&pool)
        .await
        .expect("job");
    }
    let page = whole_worklist(&pool).await;
    let order: Vec<&str> = page.rows.iter().map(|r| r.study_instance_uid.as_str()).collect();
    // possibly extensive first; then the moderate rank by score (the possible one, 8, before the
    // certain one, 5); then none or minimal by score
    assert_eq!(order, ["2.25.5", "2.25.2", "2.25.1", "2.25.4", "2.25.3"]);
    let possible = page.rows.iter().find(|r| r.study_instance_uid == "2.25.2").expect("row");
    assert_eq!(possible.extent_class.as_deref(), Some("none_or_minimal"), "the measured class stays the class shown");
    let range = possible.uncertainty.as_ref().expect("uncertainty passed to the page");
    assert_eq!(range["extent_class"], serde_json::json!(["none_or_minimal", "moderate"]));
    assert_eq!(range["severity_score"], serde_json::json!([7, 9]));
    // the result's cautions are on its row, and only there
    for row in &page.rows {
        let expected: &[&str] = if row.study_instance_uid == "2.25.4" { &[PRONE] } else { &[] };
        assert_eq!(row.cautions, expected, "{}", row.study_instance_uid);
    }
}

/// A study whose first read failed or was refused has no read at all: it ranks after the
/// moderate ones and before those a first read found "none or minimal", never at the end of the
/// list; a study not read yet (queued) stays after the read ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_without_a_first_read_ranks_before_the_normal_ones() {
    let (_db, pool) = worklist_db().await;
    // (study, job state, result), waiting longest first: without the rule the failed and the
    // refused ones would rank last, with the queued one
    let rows = [
        ("2.25.1", "dead", None),
        ("2.25.2", "done", Some(serde_json::json!({ "status": "refused", "reason": "slice spacing 12 mm" }))),
        ("2.25.3", "queued", None),
        (
            "2.25.4",
            "done",
            Some(
                serde_json::json!({ "status": "analysed", "findings": { "extent_class": "none_or_minimal", "severity_score": 2, "total": { "involvement_pct": 1.0 } } }),
            ),
        ),
        (
            "2.25.5",
            "done",
            Some(
                serde_json::json!({ "status": "analysed", "findings": { "extent_class": "moderate", "severity_score": 6, "total": { "involvement_pct": 14.0 } } }),
            ),
        ),
    ];
    for (n, (study, state, result)) in rows.iter().enumerate() {
        insert_study(&pool, study, 10 - n as i32).await;
        sqlx::query(
            "INSERT INTO jobs (kind, study_instance_uid, study_version, model, max_attempts, state, result, last_error) \
             VALUES ('analysis', $1, 1, 'covid19-lung-ct', 3, $2, $3, $4)",
        )
        .bind(study)
        .bind(state)
        .bind(result)
        .bind((*state == "dead").then_some("model forward: out of memory"))
        .execute(&pool)
        .await
        .expect("job");
    }
    let page = whole_worklist(&pool).await;
    let order: Vec<(&str, &str)> =
        page.rows.iter().map(|r| (r.study_instance_uid.as_str(), r.status.as_str())).collect();
    assert_eq!(
        order,
        [("2.25.5", "done"), ("2.25.1", "failed"), ("2.25.2", "refused"), ("2.25.4", "done"), ("2.25.3", "queued")]
    );
    let failed = page.rows.iter().find(|r| r.study_instance_uid == "2.25.1").expect("row");
    assert_eq!(failed.reason.as_deref(), Some("model forward: out of memory"));
}

/// Like the caution of a prone scan's result (`firstread_lungs::position::caution`); the page passes
/// the words through.
const PRONE: &str = "Patient Position HFP (prone: the dependent side is anterior): the method looks for dense \
                     dependent lung only along the posterior chest wall";

/// Every active package's read is on the row, and a package's abnormal class ranks its study
/// version after the extent class: among the "none or minimal" COVID-19 reads, the one whose
/// emphysema read is "none, possibly emphysema" comes before higher scores; a shadow's classes
/// never count; study versions whose COVID-19 read was refused (no first read: they rank after
/// the moderate one and before the "none or minimal" ones) keep the abnormal one first.
/// Results as the analysis jobs record them, straight into the database, through the page's query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abnormal_class_of_another_package_ranks_after_the_extent_class() {
    let (_db, pool) = worklist_db().await;
    let band = |value: &str, label: &str, abnormal: bool| {
        serde_json::json!({ "below": if abnormal { Value::Null } else { 5.0.into() }, "value": value, "label": label,
            "abnormal": abnormal, "code": { "scheme": "99FIRSTREAD", "value": value, "meaning": label } })
    };
    let none = band("none", "no emphysema by LAA-950 (< 5 %)", false);
    let emphysema = band("emphysema", "emphysema by LAA-950 (>= 5 %)", true);
    let vocabulary = |laa: f64, class: &Value, possible: Vec<Value>| {
        serde_json::json!({ "status": "analysed", "model": { "name": "emphysema-ct", "version": "0.1.0" },
            "findings": null,
            "measurements": [
                { "key": "laa_950", "label": "%LAA-950", "kind": "percent_at_or_below", "region": "both_lungs",
                  "zone": null, "value": laa, "unit": "%", "unit_symbol": "%", "voxels": 1000 },
                { "key": "laa_950", "label": "%LAA-950", "kind": "percent_at_or_below", "region": "left_lung",
                  "zone": "upper", "value": 40.0, "unit": "%", "unit_symbol": "%", "voxels": 100 }],
            "classifications": [{ "key": "emphysema", "label": "Emphysema by quantitative CT",
                "measurement": "laa_950", "region": "both_lungs", "value": laa, "class": class,
                "possible": possible, "source": null }] })
    };
    let covid = |class: &str, score: i32| {
        serde_json::json!({ "status": "analysed", "model": { "name": "covid19-lung-ct", "version": "0.2.1" },
            "findings": { "extent_class": class, "severity_score": score, "total": { "involvement_pct": 3.0 } },
            "measurements": [], "classifications": [] })
    };
    let refused = serde_json::json!({ "status": "refused", "reason": "no axial CT series" });
    // (study, COVID-19 result, emphysema result, a shadow emphysema result)
    let studies: [(&str, Value, Option<Value>, Option<Value>); 6] = [
        ("2.25.1", covid("moderate", 5), None, None),
        ("2.25.2", covid("none_or_minimal", 9), Some(vocabulary(1.2, &none, vec![])), None),
        ("2.25.3", covid("none_or_minimal", 2), Some(vocabulary(4.6, &none, vec![emphysema.clone()])), None),
        (
            "2.25.4",
            covid("none_or_minimal", 3),
            Some(vocabulary(2.0, &none, vec![])),
            Some(vocabulary(9.0, &emphysema, vec![])),
        ),
        ("2.25.5", refused.clone(), Some(vocabulary(12.0, &emphysema, vec![])), None),
        ("2.25.6", refused, None, None),
    ];
    for (i, (study, covid, vocabulary, shadow)) in studies.into_iter().enumerate() {
        // the later studies waited longer: without the classes they would rank first
        insert_study(&pool, study, i32::try_from(i).expect("small")).await;
        for (model, version, shadow, result) in [
            ("covid19-lung-ct", "0.2.1", false, Some(covid)),
            ("emphysema-ct", "0.1.0", false, vocabulary),
            ("emphysema-ct", "0.2.0", true, shadow),
        ] {
            let Some(result) = result else { continue };
            sqlx::query(
                "INSERT INTO jobs (kind, study_instance_uid, study_version, model, model_version, shadow, max_attempts, \
                     state, result) VALUES ('analysis', $1, 1, $2, $3, $4, 3, 'done', $5)",
            )
            .bind(study)
            .bind(model)
            .bind(version)
            .bind(shadow)
            .bind(result)
            .execute(&pool)
            .await
            .expect("job");
        }
    }
    let page = whole_worklist(&pool).await;
    let order: Vec<&str> = page.rows.iter().map(|r| r.study_instance_uid.as_str()).collect();
    assert_eq!(order, ["2.25.1", "2.25.5", "2.25.6", "2.25.3", "2.25.2", "2.25.4"]);
    let abnormal: Vec<bool> = page.rows.iter().map(|r| r.abnormal).collect();
    assert_eq!(abnormal, [false, true, false, true, false, false], "the shadow's emphysema does not count");
    let row = |study: &str| page.rows.iter().find(|r| r.study_instance_uid == study).expect("row");
    // the row's read stays the COVID-19 one; every active read is listed, never the shadow
    let unsure = row("2.25.3");
    assert_eq!((unsure.model.as_str(), unsure.extent_class.as_deref()), ("covid19-lung-ct", Some("none_or_minimal")));
    let models: Vec<(&str, &str, bool)> =
        unsure.reads.iter().map(|r| (r.model.as_str(), r.status.as_str(), r.extent_class)).collect();
    assert_eq!(models, [("covid19-lung-ct", "done", true), ("emphysema-ct", "done", false)]);
    let class = &unsure.reads[1].classes[0];
    assert_eq!(class.label, "Emphysema by quantitative CT");
    assert_eq!(
        (class.class.as_deref(), class.class_label.as_deref(), class.class_abnormal),
        (Some("none"), Some("no emphysema by LAA-950 (< 5 %)"), false)
    );
    let possible: Vec<(&str, bool)> = class.possible.iter().map(|p| (p.label.as_str(), p.abnormal)).collect();
    assert_eq!(possible, [("emphysema by LAA-950 (>= 5 %)", true)]);
    assert_eq!(class.value.as_deref(), Some("4.6 %"), "the whole-lung value, not a zone's");
    assert_eq!(row("2.25.4").reads.len(), 2, "no shadow read: {:?}", row("2.25.4").reads);
    // no COVID-19 read: the row's status is that read's refusal, the emphysema read is listed
    let no_extent = row("2.25.5");
    assert_eq!((no_extent.status.as_str(), no_extent.extent_class.as_deref()), ("refused", None));
    assert_eq!(no_extent.reads[0].reason.as_deref(), Some("no axial CT series"));
    assert_eq!(no_extent.reads[1].classes[0].class.as_deref(), Some("emphysema"));
    assert!(no_extent.reads[1].classes[0].class_abnormal);
    // the page's JSON
    let json = serde_json::to_value(row("2.25.3")).expect("json");
    assert_eq!(json["abnormal"], true);
    assert_eq!(json["reads"][1]["classes"][0]["possible"][0]["class"], "emphysema");
}
