//! The audit trail: a study in with C-STORE, its results out to the sender, DICOMweb queries and
//! retrievals, refused requests and logins: each on record with who, from where, the study and the
//! outcome; the table refuses changes; `firstread audit --study` lists them.

use std::process::Command;
use std::time::Duration;

use firstread_dimse::Destination;
use firstread_e2e::*;
use sqlx::Row;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_to_a_study_is_on_record() {
    let scp_port = free_port();
    let received = tempfile::tempdir().expect("dir");
    let _scp = storescp(scp_port, received.path());
    let node = TestNode::start(|c| {
        c.assembly.stable_after = Duration::from_millis(500);
        c.export.destinations =
            vec![Destination { ae_title: "MODALITY".into(), host: "127.0.0.1".into(), port: scp_port, tls: None }];
    })
    .await;
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "FIRSTREAD", "-aet", "MODALITY", "127.0.0.1", &node.port().to_string()]).args(sample_series(""));
    assert!(run(cmd).status.success(), "sample sent");
    let exported = eventually_async(Duration::from_secs(120), || async {
        node.count("SELECT count(*) FROM jobs WHERE kind = 'export' AND state = 'done'").await == 2
    })
    .await;
    assert!(exported, "results sent back");
    let study: String = sqlx::query_scalar("SELECT study_instance_uid FROM studies WHERE analysable")
        .fetch_one(&node.pool)
        .await
        .expect("study");

    // DICOMweb with the token: a query, and the metadata twice (one retrieval on record)
    let http = reqwest::Client::new();
    let base = node.dicomweb();
    let get = |url: String, token: &str| http.get(url).bearer_auth(token).send();
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(get(format!("{base}/studies?StudyInstanceUID={study}"), TEST_TOKEN).await.expect("qido")), 200);
    for _ in 0..2 {
        assert_eq!(status(get(format!("{base}/studies/{study}/metadata"), TEST_TOKEN).await.expect("wado")), 200);
    }
    // refused: a wrong token, a wrong login; and a login that opens a session
    assert_eq!(status(get(format!("{base}/studies/{study}/metadata"), "forged").await.expect("wado")), 401);
    let root = format!("http://{}", node.node.http_addr.expect("HTTP"));
    let login = |token: &str| http.get(format!("{root}/login?token={token}")).send();
    assert_eq!(status(login("wrong").await.expect("login")), 401);
    let opened = http.get(format!("{root}/login?token={TEST_TOKEN}&next=/triage")).send().await.expect("login");
    assert!(opened.status().is_success() || opened.status().is_redirection());

    let recorded = eventually_async(Duration::from_secs(10), || async {
        node.count("SELECT count(*) FROM audit_events WHERE action = 'login'").await >= 3
    })
    .await;
    assert!(recorded, "logins recorded");
    let rows = sqlx::query(
        "SELECT action, actor, actor_kind, address, coalesce(study_instance_uid, ''), outcome, detail \
         FROM audit_events ORDER BY id",
    )
    .fetch_all(&node.pool)
    .await
    .expect("audit rows");
    let events: Vec<(String, String, String, String, String, String, serde_json::Value)> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get::<Option<String>, _>(3).unwrap_or_default(),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect();
    let find = |action: &str, actor: &str, outcome: &str| {
        events.iter().filter(|e| e.0 == action && e.1 == actor && e.5 == outcome).collect::<Vec<_>>()
    };
    let store_in = find("store-in", "MODALITY", "success");
    assert_eq!(store_in.len(), 1, "{events:#?}");
    assert_eq!((store_in[0].2.as_str(), store_in[0].4.as_str()), ("ae", study.as_str()));
    assert_eq!(store_in[0].6["instances"], 30);
    assert!(store_in[0].3.starts_with("127.0.0.1:"), "the sender's address: {}", store_in[0].3);
    let store_out = find("store-out", "FIRSTREAD", "success");
    // the SR, then the other objects: one export (association) each
    assert_eq!(store_out.len(), 2, "{events:#?}");
    for sent in &store_out {
        assert_eq!(sent.3, format!("MODALITY@127.0.0.1:{scp_port}"));
        assert_eq!(sent.4, study);
    }
    let query = find("query", "bearer token", "success");
    assert!(query.iter().any(|e| e.4 == study), "the QIDO-RS query names the study: {events:#?}");
    let retrieve = find("retrieve", "bearer token", "success");
    assert_eq!(retrieve.len(), 1, "two metadata requests within a minute are one retrieval: {events:#?}");
    assert_eq!(retrieve[0].4, study);
    let refused = find("login", "anonymous", "failure");
    assert_eq!(refused.len(), 2, "the forged token and the wrong login: {events:#?}");
    assert!(
        refused.iter().all(|e| !e.6.to_string().contains("wrong") && !e.6.to_string().contains("forged")),
        "no credentials on record"
    );
    assert_eq!(find("login", "session cookie", "success").len(), 1, "{events:#?}");

    // append-only
    for sql in ["UPDATE audit_events SET actor = 'someone else'", "DELETE FROM audit_events", "TRUNCATE audit_events"] {
        let err = sqlx::query(sql).execute(&node.pool).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }

    // the operator's view
    let out = Command::new(firstread_bin())
        .args(["audit", "--json", "--study", &study])
        .env("FIRSTREAD_DATABASE__URL", &node.db.url)
        .env("FIRSTREAD_LOG__FILTER", "warn")
        .output()
        .expect("firstread audit");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let of_study = events.iter().filter(|e| e.4 == study).count();
    assert_eq!(listed.len(), of_study, "{listed:#?}");
    assert!(listed.iter().all(|e| e["study_instance_uid"] == study.as_str()));
    assert_eq!(listed.last().map(|e| e["action"].clone()), Some("store-in".into()), "oldest last: {listed:#?}");
}
