//! Notifications against real receivers (`tests/peers/receivers.py`): a webhook receiver that
//! checks the HMAC, python-hl7's MLLP listener, and a FHIR endpoint that validates the Bundle
//! with fhir.resources. The sample CT is sent over DIMSE; what arrives is compared with the
//! analysis job's findings.

use std::path::Path;
use std::time::Duration;

use firstread_e2e::*;
use firstread_notify::{Channel, ChannelKind, Rule};
use serde_json::Value;

fn rule(name: &str, channels: &[&str]) -> Rule {
    Rule { name: name.into(), channels: channels.iter().map(|c| (*c).to_owned()).collect(), ..Rule::default() }
}

async fn job(node: &TestNode, destination: &str, version: i32) -> Option<(String, i32, Option<String>)> {
    sqlx::query_as(
        "SELECT state, attempts, last_error FROM jobs WHERE kind = 'notify' AND destination = $1 AND study_version = $2",
    )
    .bind(destination)
    .bind(version)
    .fetch_optional(&node.pool)
    .await
    .expect("query")
}

async fn wait_state(node: &TestNode, destination: &str, version: i32, state: &str, within: Duration) {
    let reached =
        eventually_async(within, || async { job(node, destination, version).await.is_some_and(|j| j.0 == state) })
            .await;
    assert!(reached, "{destination} v{version} {state}: {:?}", job(node, destination, version).await);
}

/// The findings of the analysis of study version `version`, once its job is done (a read is
/// notified with its SR, before the other result objects are written and the job completes).
async fn findings(node: &TestNode, version: i32) -> Value {
    let query = || async {
        sqlx::query_scalar::<_, Value>(
            "SELECT result->'findings' FROM jobs WHERE kind = 'analysis' AND study_version = $1 AND state = 'done'",
        )
        .bind(version)
        .fetch_optional(&node.pool)
        .await
        .expect("analysis result")
    };
    let done = eventually_async(Duration::from_secs(60), || async { query().await.is_some() }).await;
    assert!(done, "the analysis of v{version} done");
    query().await.unwrap_or_default()
}

fn lines_with(out: &Path, key: &str, value: &Value) -> Vec<Value> {
    received(out).into_iter().filter(|l| &l[key] == value).collect()
}

/// HL7 OBX value of a code (without a side) in a parsed message.
fn obx<'a>(message: &'a Value, code: &str, side: &str) -> &'a Value {
    message["obx"]
        .as_array()
        .and_then(|a| {
            a.iter().find(|o| o["id"].as_str().is_some_and(|i| i.starts_with(&format!("{code}^"))) && o["sub"] == side)
        })
        .unwrap_or_else(|| panic!("OBX {code} {side} in {message}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_channel_gets_one_message_per_study_version_and_a_correction_for_the_next() {
    let dir = tempfile::tempdir().expect("dir");
    let (hook_out, hl7_out, fhir_out) = (dir.path().join("hook"), dir.path().join("hl7"), dir.path().join("fhir"));
    let (hook_port, hl7_port, fhir_port) = (free_port(), free_port(), free_port());
    // The RIS answers AE to the first message; the FHIR server is up; the webhook receiver is down.
    let _hl7 = receiver("hl7", hl7_port, &hl7_out, &["--ae-first", "1"]);
    let _fhir = receiver("fhir", fhir_port, &fhir_out, &[]);
    let hook_url = format!("http://127.0.0.1:{hook_port}/hooks/firstread");
    let node = TestNode::start(|c| {
        c.assembly.stable_after = Duration::from_millis(500);
        let n = &mut c.notify;
        n.backoff_base = Duration::from_millis(300);
        n.backoff_max = Duration::from_secs(1);
        n.max_attempts = 30;
        n.channels = vec![
            Channel {
                url: Some(hook_url.clone()),
                secret: Some("s3cret".into()),
                ..channel("ward", ChannelKind::Webhook)
            },
            Channel {
                url: Some(hook_url.clone()),
                secret: Some("not-the-secret".into()),
                ..channel("stale", ChannelKind::Webhook)
            },
            Channel { address: Some(format!("127.0.0.1:{hl7_port}")), ..channel("ris", ChannelKind::Hl7) },
            Channel { url: Some(format!("http://127.0.0.1:{fhir_port}/fhir")), ..channel("ehr", ChannelKind::Fhir) },
        ];
        n.rules = vec![
            rule("every-read", &["ward", "ris", "ehr"]),
            rule("old-integration", &["stale"]),
            // the sample is "none or minimal": this rule sends nothing
            Rule {
                extent_class_at_least: Some(firstread_findings::ExtentClass::Severe),
                ..rule("critical", &["ward"])
            },
            Rule { refused: true, ..rule("not-read", &["ward"]) },
        ];
    })
    .await;
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "FIRSTREAD", "-aet", "CT_WARD_3", "127.0.0.1", &node.port().to_string()]).args(sample_series(""));
    assert!(run(cmd).status.success(), "sample sent");

    // Webhook: retried while the receiver is down, delivered once when it is up.
    let tried = eventually_async(Duration::from_secs(120), || async {
        job(&node, "every-read/ward", 1).await.is_some_and(|(s, a, _)| s == "queued" && a >= 1)
    })
    .await;
    assert!(tried, "webhook attempted while down: {:?}", job(&node, "every-read/ward", 1).await);
    let _hook = receiver("webhook", hook_port, &hook_out, &["--secret", "s3cret"]);
    wait_state(&node, "every-read/ward", 1, "done", Duration::from_secs(30)).await;
    // A receiver that rejects the signature (401): dead with the reason, not retried for ever.
    wait_state(&node, "old-integration/stale", 1, "dead", Duration::from_secs(30)).await;
    let (_, _, error) = job(&node, "old-integration/stale", 1).await.expect("job");
    assert!(error.as_deref().is_some_and(|e| e.contains("401") && e.contains("bad signature")), "{error:?}");
    wait_state(&node, "every-read/ris", 1, "done", Duration::from_secs(30)).await;
    wait_state(&node, "every-read/ehr", 1, "done", Duration::from_secs(30)).await;
    assert!(job(&node, "critical/ward", 1).await.is_none(), "the critical rule does not match the sample");

    let f = findings(&node, 1).await;
    let pct = (f["total"]["involvement_pct"].as_f64().expect("pct") * 10.0).round() / 10.0;
    let score = f["severity_score"].as_u64().expect("score");
    let class_code = match f["extent_class"].as_str().expect("class") {
        "none_or_minimal" => "SFR-MINIMAL",
        other => panic!("the sample is none or minimal, not {other}"),
    };

    // Webhook: exactly one signed message, with the findings.
    let good = lines_with(&hook_out, "signature_ok", &Value::Bool(true));
    assert_eq!(good.len(), 1, "one message per study version: {good:?}");
    let body = &good[0]["body"];
    assert_eq!(good[0]["delivery_id"], body["delivery_id"]);
    assert_eq!(good[0]["event"], "first_read");
    assert_eq!(body["status"], "final");
    assert_eq!(body["study"]["study_version"], 1);
    assert_eq!(body["study"]["sender"], "CT_WARD_3");
    assert_eq!(body["involvement_pct"].as_f64(), Some(pct));
    assert_eq!(body["severity_score"].as_u64(), Some(score));
    assert_eq!(body["extent_class"]["code"], class_code);
    let measurements = body["measurements"].as_array().expect("measurements");
    let involvement = measurements.iter().find(|m| m["key"] == "involvement_pct").expect("involvement");
    assert_eq!(involvement["value"]["value"].as_f64(), Some(pct));
    assert_eq!(involvement["value"]["ucum"], "%");
    assert!(body["notice"].as_str().is_some_and(|n| n.contains("not a diagnosis")));
    let bad = lines_with(&hook_out, "signature_ok", &Value::Bool(false));
    assert_eq!(bad.len(), 1, "the wrong secret was tried once (401 is permanent): {bad:?}");

    // HL7: AE answered first and retried; the accepted ORU^R01 carries the findings.
    let hl7 = received(&hl7_out);
    assert_eq!(hl7.len(), 2, "AE, then AA: {hl7:?}");
    assert_eq!((hl7[0]["ack"].as_str(), hl7[1]["ack"].as_str()), (Some("AE"), Some("AA")));
    assert_eq!(hl7[0]["control_id"], hl7[1]["control_id"], "a retry is the same message");
    let oru = &hl7[1];
    assert_eq!(oru["msh"]["type"], "ORU^R01^ORU_R01");
    assert_eq!(oru["msh"]["version"], "2.5.1");
    assert_eq!(oru["obr"]["status"], "F");
    let source = dicom_object::open_file(&sample_series("")[0]).expect("source");
    let patient_id = source.element(dicom_dictionary_std::tags::PATIENT_ID).expect("id").to_str().expect("id");
    assert_eq!(oru["pid"]["id"], patient_id.trim());
    let study_uid: String =
        sqlx::query_scalar("SELECT study_instance_uid FROM studies").fetch_one(&node.pool).await.expect("study");
    assert_eq!(oru["obr"]["filler"], format!("{study_uid}^FIRSTREAD"));
    let o = obx(oru, "INVOLVEMENT", "");
    assert_eq!((o["type"].as_str(), o["units"].as_str()), (Some("NM"), Some("%^%^UCUM")));
    assert_eq!(o["value"].as_str().and_then(|v| v.parse::<f64>().ok()), Some(pct));
    assert_eq!(o["flag"], if pct >= 10.0 { "A" } else { "N" });
    let left = f["lungs"][0]["involvement_pct"].as_f64().expect("left");
    let o = obx(oru, "INVOLVEMENT", "left");
    assert_eq!(o["value"].as_str().and_then(|v| v.parse::<f64>().ok()), Some((left * 10.0).round() / 10.0));
    let o = obx(oru, "SEVERITY-SCORE", "");
    assert_eq!(o["value"].as_str().and_then(|v| v.parse::<u64>().ok()), Some(score));
    let o = obx(oru, "EXTENT-CLASS", "");
    assert_eq!(o["type"], "CWE");
    assert!(o["value"].as_str().is_some_and(|v| v.starts_with(&format!("{class_code}^"))), "{o}");
    assert_eq!(o["equipment"], "covid19-lung-ct-0.2.4^firstread");

    // FHIR: the Bundle validates; its Observations carry the findings.
    let fhir = received(&fhir_out);
    assert_eq!(fhir.len(), 1, "{fhir:?}");
    assert_eq!(fhir[0]["valid"], true, "{}", fhir[0]["error"]);
    assert_eq!(fhir[0]["content_type"], "application/fhir+json");
    let entries = fhir[0]["bundle"]["entry"].as_array().expect("entries");
    let resources: Vec<&Value> = entries.iter().map(|e| &e["resource"]).collect();
    let observations: Vec<&&Value> = resources.iter().filter(|r| r["resourceType"] == "Observation").collect();
    assert_eq!(observations.len(), measurements.len(), "one Observation per measurement");
    let total = observations
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "INVOLVEMENT" && o["bodySite"]["coding"][0]["code"] == "39607008")
        .expect("both-lung involvement");
    assert_eq!(total["valueQuantity"]["value"].as_f64(), Some(pct));
    assert_eq!(total["valueQuantity"]["system"], "http://unitsofmeasure.org");
    let report = resources.iter().find(|r| r["resourceType"] == "DiagnosticReport").expect("report");
    assert_eq!(report["status"], "final");
    assert_eq!(report["result"].as_array().map(Vec::len), Some(observations.len()));
    let device = resources.iter().find(|r| r["resourceType"] == "Device").expect("device");
    assert_eq!(device["version"][0]["value"], "0.2.4");

    // A late image opens study version 2: each channel that got version 1 gets a correction.
    send_tiny_series(node.addr(), &study_uid, "1.2.826.0.1.3680043.8.498.77.1", 0..1).await;
    for d in ["every-read/ward", "every-read/ris", "every-read/ehr"] {
        wait_state(&node, d, 2, "done", Duration::from_secs(120)).await;
    }
    let good = lines_with(&hook_out, "signature_ok", &Value::Bool(true));
    assert_eq!(good.len(), 2, "one message per study version: {good:?}");
    assert_eq!(good[1]["body"]["status"], "corrected");
    assert_eq!(good[1]["body"]["supersedes_study_version"], 1);
    assert_eq!(good[1]["body"]["study"]["study_version"], 2);
    assert_ne!(good[0]["delivery_id"], good[1]["delivery_id"]);
    let hl7 = received(&hl7_out);
    assert_eq!(hl7.len(), 3, "{hl7:?}");
    assert_eq!(hl7[2]["obr"]["status"], "C");
    let fhir = received(&fhir_out);
    assert_eq!(fhir.len(), 2);
    let report = fhir[1]["bundle"]["entry"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["resource"]["resourceType"] == "DiagnosticReport"))
        .expect("report");
    assert_eq!(report["resource"]["status"], "corrected");
    // the dead channel was superseded too, and stays a single attempt per version
    wait_state(&node, "old-integration/stale", 2, "dead", Duration::from_secs(30)).await;
    let n = node.count("SELECT count(*) FROM jobs WHERE kind = 'notify'").await;
    assert_eq!(n, 8, "4 deliveries per study version");

    // a study the model refuses (three tiny slices) goes to the rule for refusals only
    send_tiny_series(node.addr(), "1.2.826.0.1.3680043.8.498.77.2", "1.2.826.0.1.3680043.8.498.77.3", 0..3).await;
    wait_state(&node, "not-read/ward", 1, "done", Duration::from_secs(60)).await;
    let refused: Vec<Value> = lines_with(&hook_out, "event", &Value::String("refused".into()));
    assert_eq!(refused.len(), 1, "{refused:?}");
    let body = &refused[0]["body"];
    assert_eq!(body["kind"], "refused");
    assert!(body["refusal_reason"].as_str().is_some_and(|r| !r.is_empty()), "{body}");
    assert!(body["extent_class"].is_null() && body["measurements"] == serde_json::json!([]), "{body}");
    let tiny = "1.2.826.0.1.3680043.8.498.77.2";
    let others =
        node.count(&format!("SELECT count(*) FROM jobs WHERE kind = 'notify' AND study_instance_uid = '{tiny}'")).await;
    assert_eq!(others, 1, "a refusal matches no read rule");

    // an operator queues the dead delivery again: it is attempted once more (and dies again)
    let id: i64 =
        sqlx::query_scalar("SELECT id FROM jobs WHERE destination = 'old-integration/stale' AND study_version = 1")
            .fetch_one(&node.pool)
            .await
            .expect("id");
    let cli = |args: &[&str]| {
        let mut c = std::process::Command::new(firstread_bin());
        c.args(args).env("FIRSTREAD_DATABASE__URL", &node.db.url);
        c.output().expect("firstread")
    };
    let runs = |node: &TestNode| {
        let pool = node.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM job_runs WHERE job_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("runs")
        }
    };
    let before = runs(&node).await;
    let out = cli(&["jobs", "retry", &id.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = eventually_async(Duration::from_secs(30), || async {
        runs(&node).await == before + 1 && job(&node, "old-integration/stale", 1).await.is_some_and(|j| j.0 == "dead")
    })
    .await;
    assert!(again, "retried once more: {:?}", job(&node, "old-integration/stale", 1).await);
    let out = cli(&["jobs", "cancel", &id.to_string()]);
    assert!(!out.status.success(), "a dead job cannot be cancelled");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("no queued or running job {id}")));
    let later: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (kind, study_instance_uid, study_version, model, destination, max_attempts, run_after) \
         VALUES ('notify', '1.2.3.4', 1, 'covid19-lung-ct', 'every-read/ward', 3, now() + interval '1 hour') RETURNING id",
    )
    .fetch_one(&node.pool)
    .await
    .expect("insert");
    let out = cli(&["jobs", "cancel", &later.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (state, error): (String, Option<String>) = sqlx::query_as("SELECT state, last_error FROM jobs WHERE id = $1")
        .bind(later)
        .fetch_one(&node.pool)
        .await
        .expect("job");
    assert_eq!((state.as_str(), error.as_deref()), ("dead", Some("cancelled by an operator")));

    // metrics: sent and failed by channel, last image -> delivered
    let dead = node.count("SELECT count(*) FROM jobs WHERE kind = 'notify' AND state = 'dead'").await;
    let metrics = reqwest::Client::new()
        .get(format!("http://{}/metrics", node.node.http_addr.expect("http")))
        .bearer_auth(TEST_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let dead_gauge = format!("firstread_jobs{{kind=\"notify\",state=\"dead\"}} {dead}");
    for needle in [
        "firstread_notifications_total{channel=\"hl7\",outcome=\"sent\"}",
        "firstread_notifications_total{channel=\"hl7\",outcome=\"failed\"}",
        "firstread_notifications_total{channel=\"webhook\",outcome=\"failed\"}",
        "firstread_last_image_to_notification_seconds_count{channel=\"fhir\"}",
        dead_gauge.as_str(),
    ] {
        assert!(metrics.contains(needle), "{needle} in\n{metrics}");
    }
}

/// A study whose first read fails on every attempt has no read: once its analysis is dead, the
/// rules for refusals are told, as a refusal whose reason says the read failed (the error itself
/// stays in the job); the rules for reads are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_read_that_failed_for_good_is_notified_to_the_rules_for_refusals() {
    let dir = tempfile::tempdir().expect("dir");
    let hook_out = dir.path().join("hook");
    let hook_port = free_port();
    let _hook = receiver("webhook", hook_port, &hook_out, &["--secret", "s3cret"]);
    let node = TestNode::start(|c| {
        c.assembly.stable_after = Duration::from_millis(800);
        c.worker.max_attempts = 2;
        c.worker.backoff_base = Duration::from_millis(100);
        let n = &mut c.notify;
        n.channels = vec![Channel {
            url: Some(format!("http://127.0.0.1:{hook_port}/hooks/firstread")),
            secret: Some("s3cret".into()),
            ..channel("ward", ChannelKind::Webhook)
        }];
        n.rules = vec![rule("every-read", &["ward"]), Rule { refused: true, ..rule("not-read", &["ward"]) }];
    })
    .await;
    let study = "1.2.826.0.1.3680043.8.498.78.1";
    send_tiny_series(node.addr(), study, "1.2.826.0.1.3680043.8.498.78.2", 0..12).await;
    // the files are lost before the study is analysed: every attempt fails
    std::fs::remove_dir_all(node.dir.path().join("studies")).expect("remove files");
    wait_state(&node, "not-read/ward", 1, "done", Duration::from_secs(60)).await;
    let analysis: (String, i32) = sqlx::query_as("SELECT state, attempts FROM jobs WHERE kind = 'analysis'")
        .fetch_one(&node.pool)
        .await
        .expect("job");
    assert_eq!(analysis, ("dead".to_owned(), 2));
    assert!(job(&node, "every-read/ward", 1).await.is_none(), "a failed read matches no rule for reads");
    let messages = lines_with(&hook_out, "signature_ok", &Value::Bool(true));
    assert_eq!(messages.len(), 1, "{messages:?}");
    let body = &messages[0]["body"];
    assert_eq!(
        (body["kind"].as_str(), body["study"]["study_instance_uid"].as_str()),
        (Some("refused"), Some(study)),
        "{body}"
    );
    assert_eq!(
        body["refusal_reason"].as_str(),
        Some("the first read failed (2 attempts); read the study without it"),
        "{body}"
    );
    assert!(body["extent_class"].is_null(), "{body}");
}
