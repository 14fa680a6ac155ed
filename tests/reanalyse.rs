//! Re-analysis: a node with covid19-lung-ct 0.1.0 active reads the sample CT (dcmtk storescu),
//! exports it to the sender's dcmtk storescp and notifies a webhook. The configuration then pins
//! 0.2.1 (a second node on the same database and storage); `firstread reanalyse --model
//! covid19-lung-ct --since <yesterday>` queues exactly one job, at the re-analysis priority; it
//! runs; the study gets one new result, 0.2.1's, whose SR names 0.1.0's SR in its Predecessor
//! Documents Sequence; the storescp receives it; the webhook gets a correction of the first
//! message. Running reanalyse again queues nothing (skipped 1).

use std::time::Duration;

use dicom_dictionary_std::tags;
use firstread::{Node, Roles};
use firstread_e2e::*;
use serde_json::Value;

const MODEL: &str = "covid19-lung-ct";

/// (model version, shadow, state, result status, priority, result files)
type AnalysisRow = (String, bool, String, Option<String>, i16, Option<Value>);

async fn analyses(pool: &sqlx::PgPool) -> Vec<AnalysisRow> {
    sqlx::query_as(
        "SELECT model_version, shadow, state, result_status, priority, result->'result_files' FROM jobs \
         WHERE kind = 'analysis' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .expect("analysis jobs")
}

async fn jobs_of(pool: &sqlx::PgPool, kind: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT model_version, state FROM jobs WHERE kind = $1 ORDER BY id")
        .bind(kind)
        .fetch_all(pool)
        .await
        .expect("jobs")
}

fn text(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// The Referenced SOP Instance UIDs of the SR's Predecessor Documents Sequence.
fn predecessors(sr: &dicom_object::DefaultDicomObject) -> Vec<String> {
    let mut uids = Vec::new();
    let Some(studies) = sr.element(tags::PREDECESSOR_DOCUMENTS_SEQUENCE).ok().and_then(|e| e.items()) else {
        return uids;
    };
    for study in studies {
        for series in study.element(tags::REFERENCED_SERIES_SEQUENCE).ok().and_then(|e| e.items()).unwrap_or(&[]) {
            for sop in series.element(tags::REFERENCED_SOP_SEQUENCE).ok().and_then(|e| e.items()).unwrap_or(&[]) {
                if let Some(uid) = sop.element(tags::REFERENCED_SOP_INSTANCE_UID).ok().and_then(|e| e.to_str().ok()) {
                    uids.push(uid.trim_end_matches(['\0', ' ']).to_owned());
                }
            }
        }
    }
    uids
}

fn first_file(files: &Option<Value>) -> String {
    files.as_ref().and_then(|f| f[0].as_str()).expect("a result file").to_owned()
}

fn reanalyse(db_url: &str, extra: &[&str]) -> String {
    let since = (chrono::Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%d").to_string();
    let mut cmd = std::process::Command::new(firstread_bin());
    cmd.args(["reanalyse", "--model", MODEL, "--since", &since])
        .args(extra)
        .env("FIRSTREAD_DATABASE__URL", db_url)
        .env("FIRSTREAD_WORKER__MODELS_DIR", repo_root().join("models"))
        .env("FIRSTREAD_WORKER__MODELS", format!("[\"{MODEL}@0.2.1\"]"))
        .env("FIRSTREAD_LOG__FILTER", "warn");
    let out = run(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_model_version_reanalyses_a_stored_study_and_corrects_the_first_read() {
    let peers = ResultPeers::start();
    let (received_dir, hook_out) = (peers.received_dir.as_path(), peers.hook_out.as_path());
    let TestNode { node, config, dir: storage, db, pool } = TestNode::start(|c| {
        c.assembly.stable_after = Duration::from_millis(500);
        c.worker.models = Some(vec![format!("{MODEL}@0.1.0")]);
        peers.wire(c);
    })
    .await;
    let port = node.dimse_addr.expect("DIMSE").port();
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "FIRSTREAD", "-aet", "MODALITY", "127.0.0.1", &port.to_string()]).args(sample_series(""));
    assert!(run(cmd).status.success(), "sample sent");

    let settled = |n_analyses: usize| {
        let pool = pool.clone();
        async move {
            let a = analyses(&pool).await;
            let export = jobs_of(&pool, "export").await;
            let notify = jobs_of(&pool, "notify").await;
            a.len() == n_analyses
                && a.iter().all(|j| j.2 == "done")
                && export.len() == 2 * n_analyses // the SR, the other objects
                && export.iter().all(|j| j.1 == "done")
                && notify.len() == n_analyses
                && notify.iter().all(|j| j.1 == "done")
        }
    };
    let first = eventually_async(Duration::from_secs(300), || settled(1)).await;
    assert!(first, "0.1.0's read: {:?}, exports {:?}", analyses(&pool).await, jobs_of(&pool, "export").await);
    let read = analyses(&pool).await;
    assert_eq!((read[0].0.as_str(), read[0].3.as_deref(), read[0].4), ("0.1.0", Some("analysed"), 0));
    let received_first = files_under(received_dir).len();

    // the configuration pins 0.2.1: the node restarts with it
    node.stop().await;
    let mut pinned = config.clone();
    pinned.worker.models = Some(vec![format!("{MODEL}@0.2.1")]);
    let node = Node::start(&pinned, Roles::ALL).await.expect("the pinned node starts");

    let dry = reanalyse(&db.url, &["--dry-run"]);
    assert!(dry.contains("would queue 1, skipped 0"), "{dry}");
    let out = reanalyse(&db.url, &[]);
    assert!(out.contains(&format!("queued 1, skipped 0 (already read by {MODEL} 0.2.1)")), "{out}");
    assert!(out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["default", "1", "0"]), "{out}");

    let second = eventually_async(Duration::from_secs(300), || settled(2)).await;
    let a = analyses(&pool).await;
    assert!(second, "the re-analysis: {a:?}, exports {:?}", jobs_of(&pool, "export").await);
    assert_eq!(
        a.iter().map(|j| (j.0.as_str(), j.1, j.3.as_deref(), j.4)).collect::<Vec<_>>(),
        [("0.1.0", false, Some("analysed"), 0), ("0.2.1", false, Some("analysed"), -10)],
        "exactly one new result, 0.2.1's, queued below live work"
    );
    let versions: Vec<i32> =
        sqlx::query_scalar("SELECT DISTINCT study_version FROM jobs").fetch_all(&pool).await.expect("versions");
    assert_eq!(versions, [1], "the same study version");

    // 0.2.1's SR names 0.1.0's SR as its predecessor
    let root = &config.storage.root;
    let old_sr = dicom_object::open_file(root.join(first_file(&a[0].5))).expect("0.1.0 SR");
    let new_sr = dicom_object::open_file(root.join(first_file(&a[1].5))).expect("0.2.1 SR");
    assert_eq!((text(&old_sr, tags::MODALITY), text(&new_sr, tags::MODALITY)), ("SR".into(), "SR".into()));
    let old_uid = text(&old_sr, tags::SOP_INSTANCE_UID);
    let new_uid = text(&new_sr, tags::SOP_INSTANCE_UID);
    assert_ne!(old_uid, new_uid);
    assert_eq!(predecessors(&new_sr).as_slice(), std::slice::from_ref(&old_uid), "Predecessor Documents Sequence");
    assert!(predecessors(&old_sr).is_empty());

    // the storescp received 0.2.1's objects, its SR among them
    let got = files_under(received_dir);
    assert!(got.len() > received_first, "{got:?}");
    let received_srs: Vec<String> = got
        .iter()
        .filter_map(|f| dicom_object::open_file(f).ok())
        .filter(|o| text(o, tags::MODALITY) == "SR")
        .map(|o| text(&o, tags::SOP_INSTANCE_UID))
        .collect();
    assert!(received_srs.contains(&new_uid) && received_srs.contains(&old_uid), "{received_srs:?}");

    // the webhook: the first read, then a correction of it by 0.2.1
    let delivered = received(hook_out);
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    let bodies: Vec<&Value> = delivered.iter().map(|d| &d["body"]).collect();
    let second_body = bodies.iter().find(|b| b["model"]["version"] == "0.2.1").expect("0.2.1's message");
    assert_eq!(second_body["status"], "corrected", "{second_body}");
    assert_eq!(second_body["supersedes_study_version"], 1, "{second_body}");
    assert_ne!(delivered[0]["delivery_id"], delivered[1]["delivery_id"]);

    // again: nothing to queue
    let again = reanalyse(&db.url, &[]);
    assert!(again.contains("queued 0, skipped 1"), "{again}");
    assert_eq!(analyses(&pool).await.len(), 2);
    node.stop().await;
    drop(storage);
    drop(db);
}
