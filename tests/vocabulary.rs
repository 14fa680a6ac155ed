//! A package described by its vocabulary alone (`models/emphysema-ct`) beside the COVID-19 package,
//! on the triage worklist and in notification rules, end to end: a node with its default
//! configuration (every installed package), two studies made from the sample sent with dcmtk
//! storescu, the real notification receivers of `tests/peers/receivers.py` (the HMAC-checking
//! webhook, python-hl7's MLLP listener, the fhir.resources-validating FHIR endpoint), the
//! worklist's API and the page in headless Chromium (`tests/browser/triage.mjs`).
//!
//! - The sample as it is reads about 1.2 % LAA-950: "no emphysema". The second study is the sample
//!   with the aerated lung of its upper 60 % of slices 120 HU lower (the low-attenuation area of
//!   emphysema): "emphysema", an abnormal class; both are "none or minimal" COVID-19 reads.
//! - Rules: `abnormal = true` on the emphysema package's classification (webhook, HL7, FHIR) sends
//!   the second study only; `class_in = ["none"]` (webhook) the first only; neither sends a
//!   COVID-19 read.
//! - The worklist ranks the abnormal study first (same extent class; without the emphysema read it
//!   would come second, being the later one) and carries both reads; the page shows the classes
//!   with their labels from the manifest under "Other findings", the abnormal one marked.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use firstread_e2e::*;
use firstread_notify::{Channel, ChannelKind, Rule};
use serde_json::Value;

const PASSWORD: &str = "a long enough passphrase";
const EMPHYSEMA: &str = "emphysema-ct";

fn storescu(port: u16, files: &[std::path::PathBuf]) {
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "FIRSTREAD", "-aet", "CT_CHEST_1", "127.0.0.1", &port.to_string()]).args(files);
    assert!(run(cmd).status.success(), "study sent");
}

/// (study, model, destination) of every notification job, sorted.
async fn deliveries(node: &TestNode) -> Vec<(String, String, String, String)> {
    sqlx::query_as(
        "SELECT study_instance_uid, model, destination, state FROM jobs WHERE kind = 'notify' \
         ORDER BY study_instance_uid, model, destination",
    )
    .fetch_all(&node.pool)
    .await
    .expect("notify jobs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vocabulary_classes_rank_on_the_worklist_and_match_notification_rules() {
    let dir = tempfile::tempdir().expect("dir");
    let (hook_out, hl7_out, fhir_out) = (dir.path().join("hook"), dir.path().join("hl7"), dir.path().join("fhir"));
    let (hook_port, hl7_port, fhir_port) = (free_port(), free_port(), free_port());
    let _hook = receiver("webhook", hook_port, &hook_out, &["--secret", "s3cret"]);
    let _hl7 = receiver("hl7", hl7_port, &hl7_out, &[]);
    let _fhir = receiver("fhir", fhir_port, &fhir_out, &[]);
    let node = TestNode::start(|c| {
        c.assembly.stable_after = Duration::from_millis(500);
        // the default: every installed package at its highest version (COVID-19 and emphysema)
        c.worker.models = None;
        let n = &mut c.notify;
        n.backoff_base = Duration::from_millis(300);
        n.backoff_max = Duration::from_secs(1);
        n.channels = vec![
            Channel {
                url: Some(format!("http://127.0.0.1:{hook_port}/hooks/firstread")),
                secret: Some("s3cret".into()),
                ..channel("ward", ChannelKind::Webhook)
            },
            Channel { address: Some(format!("127.0.0.1:{hl7_port}")), ..channel("ris", ChannelKind::Hl7) },
            Channel { url: Some(format!("http://127.0.0.1:{fhir_port}/fhir")), ..channel("ehr", ChannelKind::Fhir) },
        ];
        n.rules = vec![
            Rule {
                name: "emphysema".into(),
                channels: vec!["ward".into(), "ris".into(), "ehr".into()],
                models: vec![EMPHYSEMA.into()],
                classification: Some("emphysema".into()),
                abnormal: true,
                ..Rule::default()
            },
            Rule {
                name: "no-emphysema".into(),
                channels: vec!["ward".into()],
                classification: Some("emphysema".into()),
                class_in: vec!["none".into()],
                ..Rule::default()
            },
        ];
    })
    .await;
    firstread_users::add(&node.pool, "dr.reader", firstread_users::Role::Radiologist, Some(PASSWORD), &[])
        .await
        .expect("user added");

    // the sample as it is, then with low attenuation written into the upper lungs
    let (normal, normal_files) =
        sample_study(&dir.path().join("n"), &Patient { name: "Norma^Ann", id: "P-N", accession: "ACC-N" }, |_, _| {
            false
        });
    let (emphysema, emphysema_files) = sample_study_hu(
        &dir.path().join("e"),
        &Patient { name: "Emma^Bob", id: "P-E", accession: "ACC-E" },
        |z, _, hu| if z >= 0.4 && hu > -950.0 && hu < -500.0 { hu - 120.0 } else { hu },
    );
    let port = node.port();
    for files in [normal_files, emphysema_files] {
        tokio::task::spawn_blocking(move || storescu(port, &files)).await.expect("send");
    }

    // four reads, then four deliveries (three for the abnormal study, one for the other)
    let analyses = || async {
        sqlx::query_as::<_, (String, String, String, Option<String>)>(
            "SELECT study_instance_uid, model, state, result_status FROM jobs WHERE kind = 'analysis'",
        )
        .fetch_all(&node.pool)
        .await
        .expect("jobs")
    };
    let read = eventually_async(Duration::from_secs(400), || async {
        let a = analyses().await;
        a.len() == 4 && a.iter().all(|j| j.2 == "done")
    })
    .await;
    assert!(read, "{:?}", analyses().await);
    let sent = eventually_async(Duration::from_secs(60), || async {
        let d = deliveries(&node).await;
        d.len() >= 4 && d.iter().all(|j| j.3 == "done")
    })
    .await;
    let d = deliveries(&node).await;
    assert!(sent, "{d:?}");
    // the emphysema package's class of each study, as the analysis recorded it
    let class_of = |study: &str| {
        let pool = node.pool.clone();
        let study = study.to_owned();
        async move {
            sqlx::query_as::<_, (Option<String>, Value, Option<f64>)>(
                "SELECT c->'class'->>'value', c->'possible', (c->>'value')::float8 FROM jobs, \
                 jsonb_array_elements(result->'classifications') c \
                 WHERE kind = 'analysis' AND model = $1 AND study_instance_uid = $2",
            )
            .bind(EMPHYSEMA)
            .bind(study)
            .fetch_one(&pool)
            .await
            .expect("the emphysema read's class")
        }
    };
    let (normal_class, normal_possible, normal_laa) = class_of(&normal).await;
    let (emphysema_class, _, emphysema_laa) = class_of(&emphysema).await;
    eprintln!("%LAA-950: sample {normal_laa:?}, upper lungs lowered {emphysema_laa:?}");
    assert_eq!((normal_class.as_deref(), &normal_possible), (Some("none"), &serde_json::json!([])));
    assert_eq!(emphysema_class.as_deref(), Some("emphysema"), "{emphysema_laa:?}");
    let extent: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT extent_class FROM jobs WHERE kind = 'analysis' AND model = 'covid19-lung-ct' ORDER BY id",
    )
    .fetch_all(&node.pool)
    .await
    .expect("COVID-19 classes");
    assert_eq!(extent, vec![Some("none_or_minimal".to_owned()); 2], "both none or minimal COVID-19 reads");

    // exactly the rules that match fired: abnormal for the emphysema study on every channel, the
    // "none" class for the sample; never a COVID-19 read
    let expected = {
        let mut e = vec![
            (emphysema.clone(), EMPHYSEMA.to_owned(), "emphysema/ehr".to_owned(), "done".to_owned()),
            (emphysema.clone(), EMPHYSEMA.to_owned(), "emphysema/ris".to_owned(), "done".to_owned()),
            (emphysema.clone(), EMPHYSEMA.to_owned(), "emphysema/ward".to_owned(), "done".to_owned()),
            (normal.clone(), EMPHYSEMA.to_owned(), "no-emphysema/ward".to_owned(), "done".to_owned()),
        ];
        e.sort();
        e
    };
    assert_eq!(d, expected);

    // webhook: two signed messages, one per rule, each with the class as decided
    let hooks: Vec<Value> = received(&hook_out).into_iter().filter(|l| l["signature_ok"] == true).collect();
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    let body_of = |rule: &str| {
        hooks.iter().map(|h| &h["body"]).find(|b| b["rule"] == rule).unwrap_or_else(|| panic!("{rule}: {hooks:?}"))
    };
    let abnormal = body_of("emphysema");
    assert_eq!(abnormal["study"]["study_instance_uid"], emphysema.as_str());
    assert_eq!(abnormal["model"]["name"], EMPHYSEMA);
    let c = &abnormal["classifications"][0];
    assert_eq!(
        (c["key"].as_str(), c["class"].as_str(), c["abnormal"].as_bool()),
        (Some("emphysema"), Some("emphysema"), Some(true))
    );
    assert_eq!(c["class_label"], "emphysema by LAA-950 (>= 5 %)", "the manifest's label");
    let flagged = abnormal["measurements"].as_array().and_then(|m| m.iter().find(|m| m["key"] == "emphysema")).cloned();
    assert_eq!(
        flagged.map(|m| (m["abnormal"].clone(), m["value"]["code"].clone())),
        Some((Value::Bool(true), "87433001".into()))
    );
    let none = body_of("no-emphysema");
    assert_eq!(none["study"]["study_instance_uid"], normal.as_str());
    assert_eq!(
        (none["classifications"][0]["class"].as_str(), none["classifications"][0]["abnormal"].as_bool()),
        (Some("none"), Some(false))
    );

    // HL7: one ORU^R01, the class coded and flagged abnormal
    let hl7 = received(&hl7_out);
    assert_eq!(hl7.len(), 1, "{hl7:?}");
    assert_eq!(hl7[0]["ack"], "AA");
    assert_eq!(hl7[0]["obr"]["filler"], format!("{emphysema}^FIRSTREAD"));
    let obx = hl7[0]["obx"].as_array().expect("OBX");
    let class = obx
        .iter()
        .find(|o| o["type"] == "CWE" && o["value"].as_str().is_some_and(|v| v.starts_with("87433001^")))
        .unwrap_or_else(|| panic!("the emphysema class in {obx:?}"));
    assert_eq!(class["flag"], "A", "{class}");
    assert_eq!(class["equipment"], "emphysema-ct-0.1.0^firstread");

    // FHIR: one valid Bundle, the class an Observation interpreted abnormal
    let fhir = received(&fhir_out);
    assert_eq!(fhir.len(), 1, "{fhir:?}");
    assert_eq!(fhir[0]["valid"], true, "{}", fhir[0]["error"]);
    let observation = fhir[0]["bundle"]["entry"]
        .as_array()
        .and_then(|e| {
            e.iter().map(|e| &e["resource"]).find(|r| {
                r["resourceType"] == "Observation" && r["valueCodeableConcept"]["coding"][0]["code"] == "87433001"
            })
        })
        .cloned()
        .unwrap_or_else(|| panic!("the class as an Observation: {}", fhir[0]["bundle"]));
    assert_eq!(observation["interpretation"][0]["coding"][0]["code"], "A", "{observation}");

    // the worklist: the abnormal study first, both reads on each row
    let base = format!("http://{}", node.node.http_addr.expect("http"));
    let page: Value = reqwest::Client::new()
        .get(format!("{base}/triage/api/studies"))
        .bearer_auth(TEST_TOKEN)
        .send()
        .await
        .expect("worklist")
        .json()
        .await
        .expect("json");
    let rows = page["rows"].as_array().expect("rows");
    let order: Vec<&str> = rows.iter().filter_map(|r| r["study_instance_uid"].as_str()).collect();
    assert_eq!(order, [emphysema.as_str(), normal.as_str()], "the abnormal class ranks first: {page:#}");
    assert_eq!((rows[0]["abnormal"].as_bool(), rows[1]["abnormal"].as_bool()), (Some(true), Some(false)));
    for row in rows {
        assert_eq!(row["model"], "covid19-lung-ct", "the row's read is the COVID-19 one: {row}");
        let models: Vec<&str> =
            row["reads"].as_array().expect("reads").iter().filter_map(|r| r["model"].as_str()).collect();
        assert_eq!(models, ["covid19-lung-ct", EMPHYSEMA], "{row}");
    }
    let class = &rows[0]["reads"][1]["classes"][0];
    assert_eq!(class["class"], "emphysema");
    assert_eq!(class["class_label"], "emphysema by LAA-950 (>= 5 %)");
    assert_eq!(class["label"], "Emphysema by quantitative CT");
    assert_eq!(class["class_abnormal"], true);
    assert!(class["value"].as_str().is_some_and(|v| v.ends_with(" %")), "{class}");
    assert_eq!(rows[1]["reads"][1]["classes"][0]["class_label"], "no emphysema by LAA-950 (< 5 %)");

    // the page: the same order, the classes under Other findings, the abnormal one marked
    let shots = repo_root().join("target/triage-screenshots-vocabulary");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let mut browser = Command::new("node")
        .arg(repo_root().join("tests/browser/triage.mjs"))
        .args(["--base", &base, "--user", "dr.reader", "--password", PASSWORD, "--expect", "2"])
        .args(["--timeout-ms", "60000", "--out"])
        .arg(&shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let lines = std::io::BufReader::new(browser.stdout.take().expect("stdout")).lines();
    let output: Vec<String> = tokio::task::spawn_blocking(move || {
        let lines: Vec<String> = lines.map_while(Result::ok).collect();
        let _ = browser.wait();
        lines
    })
    .await
    .expect("browser");
    assert_eq!(output.first().map(String::as_str), Some("ready"), "{output:?}");
    let summary: Value = output.get(1).and_then(|l| serde_json::from_str(l).ok()).unwrap_or_default();
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert_eq!(summary["console_errors"], serde_json::json!([]), "{summary:#}");
    let shown = summary["order"].as_array().expect("order");
    let studies: Vec<&str> = shown.iter().filter_map(|r| r["study"].as_str()).collect();
    assert_eq!(studies, [emphysema.as_str(), normal.as_str()], "{summary:#}");
    assert_eq!((shown[0]["abnormal"].as_bool(), shown[1]["abnormal"].as_bool()), (Some(true), Some(false)));
    let other = |i: usize| shown[i]["other"].as_str().unwrap_or_default().to_owned();
    assert!(
        other(0).contains("emphysema by LAA-950 (>= 5 %)") && other(0).contains("emphysema-ct 0.1.0"),
        "{}",
        other(0)
    );
    assert!(other(1).contains("no emphysema by LAA-950 (< 5 %)"), "{}", other(1));
}
