//! Sites (hospitals) of one node: two CT scanners of two hospitals send over DIMSE (dcmtk
//! `storescu`), one of them the same study as the other; each hospital's user sees only its own
//! studies in QIDO-RS, WADO-RS, STOW-RS, the triage page, its key images and `/metrics`; a
//! guessed Study Instance UID of the other hospital answers 404 (not 403); the same study sent by
//! both is two records, each analysed and visible to its own site only. In headless Chromium
//! (`tests/browser/viewer-sites.mjs`), each user's OHIF study list holds their site's studies, and a
//! direct viewer link to the other site's study shows nothing.

use std::path::PathBuf;
use std::time::Duration;

use firstread::config::{PeerConfig, UnknownPeers};
use firstread_e2e::*;
use reqwest::StatusCode;
use serde_json::Value;

const PASSWORD: &str = "a long enough passphrase";

fn peer(ae: &str, site: &str) -> PeerConfig {
    PeerConfig {
        ae_title: ae.into(),
        host: Some("127.0.0.1".into()),
        port: None,
        results: false,
        always: false,
        tls: None,
        site: Some(site.into()),
    }
}

fn storescu(port: u16, calling: &str, files: &[PathBuf]) -> bool {
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "FIRSTREAD", "-aet", calling, "127.0.0.1", &port.to_string()]).args(files);
    run(cmd).status.success()
}

/// The Study Instance UIDs a QIDO-RS answer lists.
fn studies_of(answer: &Value) -> Vec<String> {
    let mut uids: Vec<String> = answer
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["0020000D"]["Value"][0].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    uids.sort();
    uids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_site_sees_only_its_own_studies() {
    let node = TestNode::start(|c| {
        c.assembly.stable_after = Duration::from_millis(800);
        c.dimse.unknown_peers = UnknownPeers::Refuse;
        c.peers = vec![peer("CT_ANNE", "st-anne"), peer("CT_BRUNO", "chu-bruno")];
        c.http.token = None;
    })
    .await;
    let pool = &node.pool;
    use firstread_users::Role;
    let token = |name: &'static str, role: Role, sites: &'static [&'static str]| async move {
        let sites: Vec<String> = sites.iter().map(|s| (*s).to_owned()).collect();
        firstread_users::add(pool, name, role, Some(PASSWORD), &sites).await.expect("user");
        firstread_users::issue_token(pool, name, "test").await.expect("token")
    };
    let anne = token("anne", Role::Radiologist, &["st-anne"]).await;
    let bruno = token("bruno", Role::Radiologist, &["chu-bruno"]).await;
    let ops = token("ops", Role::Admin, &["*"]).await;
    let monitor_anne = token("monitor-anne", Role::Service, &["st-anne"]).await;

    let dir = tempfile::tempdir().expect("dir");
    let (shared, shared_files) =
        sample_study(&dir.path().join("s"), &Patient { name: "Shared^Sam", id: "P-S", accession: "A-S" }, |_, _| false);
    let (own, own_files) =
        sample_study(&dir.path().join("o"), &Patient { name: "Own^Olga", id: "P-O", accession: "A-O" }, |_, _| false);
    let port = node.port();
    let send = |calling: &'static str, files: Vec<PathBuf>| {
        tokio::task::spawn_blocking(move || storescu(port, calling, &files))
    };
    assert!(send("CT_ANNE", shared_files.clone()).await.expect("send"), "St Anne sends the shared study");
    assert!(send("CT_BRUNO", shared_files.clone()).await.expect("send"), "CHU Bruno sends the same study");
    assert!(send("CT_ANNE", own_files.clone()).await.expect("send"), "St Anne sends its own study");
    assert!(!send("CT_UNKNOWN", own_files[..1].to_vec()).await.expect("send"), "an unknown calling AE is refused");

    // the same study twice: two records, each analysed
    let analysed = eventually_async(Duration::from_secs(120), || async {
        node.count("SELECT count(*) FROM jobs WHERE kind = 'analysis' AND state = 'done'").await == 3
    })
    .await;
    assert!(analysed, "three analyses: the shared study once per site, and St Anne's own");
    let records: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT s.site, s.study_instance_uid, (SELECT count(*) FROM instances i \
             WHERE i.site = s.site AND i.study_instance_uid = s.study_instance_uid AND i.sop_class_uid = $1) \
         FROM studies s ORDER BY 1, 2",
    )
    .bind("1.2.840.10008.5.1.4.1.1.2")
    .fetch_all(pool)
    .await
    .expect("studies");
    let n = shared_files.len() as i64;
    let mut expected = vec![
        ("chu-bruno".to_owned(), shared.clone(), n),
        ("st-anne".to_owned(), shared.clone(), n),
        ("st-anne".to_owned(), own.clone(), n),
    ];
    expected.sort();
    assert_eq!(records, expected);
    // each site's files in its own folder; the result objects too, with their own UIDs
    let paths: Vec<(String, String)> = sqlx::query_as("SELECT site, path FROM instances WHERE study_instance_uid = $1")
        .bind(&shared)
        .fetch_all(pool)
        .await
        .expect("paths");
    for (site, path) in &paths {
        assert!(path.starts_with(&format!("sites/{site}/")), "{site}: {path}");
    }
    let sr: Vec<(String, String)> = sqlx::query_as(
        "SELECT site, sop_instance_uid FROM instances WHERE study_instance_uid = $1 AND sop_class_uid = $2 ORDER BY site",
    )
    .bind(&shared)
    .bind("1.2.840.10008.5.1.4.1.1.88.34")
    .fetch_all(pool)
    .await
    .expect("SRs");
    assert_eq!(sr.len(), 4, "an SR and a volumetric SR per site: {sr:?}");
    assert_ne!(sr[0].1, sr[2].1, "the two sites' SRs have their own UIDs");

    let http = reqwest::Client::new();
    let root = format!("http://{}", node.node.http_addr.expect("HTTP"));
    let get_as = |path: String, token: &str, accept: &str| {
        http.get(format!("{root}{path}")).bearer_auth(token).header("accept", accept).send()
    };
    let get = |path: String, token: &str| get_as(path, token, "application/dicom+json");
    let json = |r: reqwest::Response| async move {
        assert_eq!(r.status(), StatusCode::OK, "{}", r.url());
        r.json::<Value>().await.expect("json")
    };

    // QIDO-RS: each its own
    let mut anne_sees = vec![shared.clone(), own.clone()];
    anne_sees.sort();
    assert_eq!(studies_of(&json(get("/dicom-web/studies".into(), &anne).await.expect("qido")).await), anne_sees);
    assert_eq!(
        studies_of(&json(get("/dicom-web/studies".into(), &bruno).await.expect("qido")).await),
        std::slice::from_ref(&shared)
    );
    let by_uid = format!("/dicom-web/studies?StudyInstanceUID={own}");
    assert!(studies_of(&json(get(by_uid.clone(), &bruno).await.expect("qido")).await).is_empty());
    assert_eq!(studies_of(&json(get(by_uid, &anne).await.expect("qido")).await), std::slice::from_ref(&own));
    let series = json(get(format!("/dicom-web/studies/{own}/series"), &bruno).await.expect("qido")).await;
    assert_eq!(series, Value::Array(Vec::new()), "another site's study has no series for this caller");

    // WADO-RS: a guessed UID of the other site is not found, never forbidden
    for (path, accept) in [
        (format!("/dicom-web/studies/{own}/metadata"), "application/dicom+json"),
        (format!("/dicom-web/studies/{own}"), "multipart/related; type=\"application/dicom\""),
        (format!("/triage/studies/{own}/1/key-image.png"), "image/png"),
    ] {
        let r = get_as(path.clone(), &bruno, accept).await.expect("wado");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let r = get_as(path.clone(), &anne, accept).await.expect("wado");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    // the shared study: each site gets its own record's instances, not the other's
    let metadata = |token: String| {
        let url = format!("/dicom-web/studies/{shared}/metadata");
        let get = &get;
        async move { json(get(url, &token).await.expect("metadata")).await.as_array().map_or(0, Vec::len) }
    };
    let (for_anne, for_bruno) = (metadata(anne.clone()).await, metadata(bruno.clone()).await);
    assert!(for_anne > shared_files.len(), "the CT and the results: {for_anne}");
    assert_eq!(for_anne, for_bruno);

    // the triage worklist and the feedback export
    let rows = |page: Value| -> Vec<(String, String)> {
        page["rows"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|row| {
                        (
                            row["site"].as_str().unwrap_or("").to_owned(),
                            row["study_instance_uid"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let bruno_rows = rows(json(get("/triage/api/studies".into(), &bruno).await.expect("worklist")).await);
    assert_eq!(bruno_rows, [("chu-bruno".to_owned(), shared.clone())]);
    let anne_rows = rows(json(get("/triage/api/studies".into(), &anne).await.expect("worklist")).await);
    assert_eq!(anne_rows.len(), 2, "{anne_rows:?}");
    assert!(anne_rows.iter().all(|(site, _)| site == "st-anne"), "{anne_rows:?}");
    let ops_rows = rows(json(get("/triage/api/studies".into(), &ops).await.expect("worklist")).await);
    assert_eq!(ops_rows.len(), 3, "every site for the operator: {ops_rows:?}");
    // feedback on the other site's study: not found; on its own: recorded for its own record
    let feedback = |token: &str, study: &str| {
        http.post(format!("{root}/triage/api/feedback"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "study_instance_uid": study, "study_version": 1, "verdict": "agree", "author": "x" }))
            .send()
    };
    assert_eq!(feedback(&bruno, &own).await.expect("feedback").status(), StatusCode::NOT_FOUND);
    assert_eq!(
        feedback(&monitor_anne, &own).await.expect("feedback").status(),
        StatusCode::FORBIDDEN,
        "a service account gives no feedback"
    );
    assert_eq!(feedback(&bruno, &shared).await.expect("feedback").status(), StatusCode::CREATED);
    // the operator sees the shared study in both sites: says which record the statement is about
    assert_eq!(feedback(&ops, &shared).await.expect("feedback").status(), StatusCode::BAD_REQUEST);
    let with_site = http
        .post(format!("{root}/triage/api/feedback"))
        .bearer_auth(&ops)
        .json(&serde_json::json!({ "study_instance_uid": shared, "study_version": 1, "verdict": "agree",
            "author": "x", "site": "st-anne" }))
        .send()
        .await
        .expect("feedback");
    assert_eq!(with_site.status(), StatusCode::CREATED);
    let given: Vec<(String, String)> =
        sqlx::query_as("SELECT site, author FROM feedback ORDER BY id").fetch_all(pool).await.expect("feedback");
    assert_eq!(given, [("chu-bruno".to_owned(), "bruno".to_owned()), ("st-anne".to_owned(), "ops".to_owned())]);
    let exported = json(get("/triage/api/feedback?format=json".into(), &anne).await.expect("export")).await;
    let authors: Vec<&str> =
        exported.as_array().map(|a| a.iter().filter_map(|f| f["author"].as_str()).collect()).unwrap_or_default();
    assert_eq!(authors, ["ops"], "St Anne does not see CHU Bruno's feedback");

    // /metrics: the site-labelled samples of the caller's sites only
    let metrics = |token: String| {
        let get = &get;
        async move { get("/metrics".into(), &token).await.expect("metrics").text().await.expect("text") }
    };
    // a radiologist does not read metrics; St Anne's monitoring does
    assert_eq!(get("/metrics".into(), &anne).await.expect("metrics").status(), StatusCode::FORBIDDEN);
    let anne_metrics = metrics(monitor_anne.clone()).await;
    assert!(anne_metrics.contains("site=\"st-anne\""), "{anne_metrics}");
    assert!(!anne_metrics.contains("site=\"chu-bruno\""), "{anne_metrics}");
    assert!(!anne_metrics.contains("firstread_jobs{"), "node-wide samples are for operators: {anne_metrics}");
    let ops_metrics = metrics(ops.clone()).await;
    assert!(ops_metrics.contains("site=\"st-anne\"") && ops_metrics.contains("site=\"chu-bruno\""));
    assert!(ops_metrics.contains("firstread_jobs{"), "{ops_metrics}");

    // STOW-RS: into the caller's site; the other site does not see it
    let part10 = std::fs::read(&own_files[0]).expect("file");
    let mut body = b"--b\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    body.extend_from_slice(&part10);
    body.extend_from_slice(b"\r\n--b--\r\n");
    let stow = |token: &str, query: &str| {
        http.post(format!("{root}/dicom-web/studies{query}"))
            .bearer_auth(token)
            .header("content-type", "multipart/related; type=\"application/dicom\"; boundary=b")
            .header("accept", "application/dicom+json")
            .body(body.clone())
            .send()
    };
    let refused = stow(&bruno, "?site=st-anne").await.expect("stow");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    // answered before its body was read: the connection is not reused for the next request
    assert_eq!(refused.headers()["connection"], "close");
    assert_eq!(stow(&ops, "").await.expect("stow").status(), StatusCode::OK, "an operator's upload: default site");
    assert_eq!(stow(&bruno, "").await.expect("stow").status(), StatusCode::OK);
    let sites_of_own: Vec<String> =
        sqlx::query_scalar("SELECT site FROM studies WHERE study_instance_uid = $1 ORDER BY site")
            .bind(&own)
            .fetch_all(pool)
            .await
            .expect("sites");
    assert_eq!(sites_of_own, ["chu-bruno", "default", "st-anne"]);
    let bruno_now = studies_of(&json(get("/dicom-web/studies".into(), &bruno).await.expect("qido")).await);
    let mut expected = vec![shared.clone(), own.clone()];
    expected.sort();
    assert_eq!(bruno_now, expected, "CHU Bruno now has its own record of that study (one instance)");
    let bruno_own = json(get(format!("/dicom-web/studies/{own}/metadata"), &bruno).await.expect("wado")).await;
    assert_eq!(bruno_own.as_array().map_or(0, Vec::len), 1, "only what CHU Bruno stored");

    // the viewer, signed in as each user: St Anne's list and its study; CHU Bruno's list without
    // St Anne's study, and a direct link to it showing nothing
    let (other, other_files) =
        sample_study(&dir.path().join("p"), &Patient { name: "Private^Paula", id: "P-P", accession: "A-P" }, |_, _| {
            false
        });
    assert!(send("CT_ANNE", other_files).await.expect("send"), "St Anne sends a study CHU Bruno never had");
    let shots = repo_root().join("target/sites-screenshots");
    let browse = |user: &'static str, study: String| {
        let (root, shots) = (root.clone(), shots.join(user));
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&shots).expect("screenshot dir");
            let out = run({
                let mut c = std::process::Command::new("node");
                c.arg(repo_root().join("tests/browser/viewer-sites.mjs"))
                    .args(["--base", &root, "--user", user, "--password", PASSWORD, "--open", &study])
                    .arg("--out")
                    .arg(&shots);
                c
            });
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            serde_json::from_str::<Value>(stdout.trim())
                .unwrap_or_else(|e| panic!("viewer-sites.mjs printed no JSON ({e}): {stdout}"))
        })
    };
    let seen_by_anne = browse("anne", other.clone()).await.expect("browser");
    assert_eq!(seen_by_anne["ok"], true, "{seen_by_anne:#}");
    let listed = |v: &Value| -> Vec<String> {
        v["listed"]
            .as_array()
            .map(|a| a.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let mut anne_list = vec![shared.clone(), own.clone(), other.clone()];
    anne_list.sort();
    assert_eq!(listed(&seen_by_anne), anne_list, "{seen_by_anne:#}");
    assert!(seen_by_anne["list_text"].as_str().is_some_and(|t| t.contains("Paula")), "{seen_by_anne:#}");
    assert_eq!(seen_by_anne["image_shown"], true, "St Anne's viewer shows its study: {seen_by_anne:#}");

    let seen_by_bruno = browse("bruno", other.clone()).await.expect("browser");
    assert_eq!(seen_by_bruno["ok"], true, "{seen_by_bruno:#}");
    let mut bruno_list = vec![shared.clone(), own.clone()];
    bruno_list.sort();
    assert_eq!(listed(&seen_by_bruno), bruno_list, "{seen_by_bruno:#}");
    assert!(seen_by_bruno["list_text"].as_str().is_some_and(|t| !t.contains("Paula")), "{seen_by_bruno:#}");
    assert_eq!(seen_by_bruno["image_shown"], false, "{seen_by_bruno:#}");
    // OHIF's own words for a study the server does not have
    assert!(seen_by_bruno["open_text"].as_str().is_some_and(|t| t.contains("not available")), "{seen_by_bruno:#}");
    let answered: Vec<(u64, Option<u64>)> = seen_by_bruno["opened"]
        .as_array()
        .map(|a| a.iter().map(|r| (r["status"].as_u64().unwrap_or(0), r["items"].as_u64())).collect())
        .unwrap_or_default();
    assert!(!answered.is_empty(), "the viewer asked for the study: {seen_by_bruno:#}");
    assert!(
        answered.iter().all(|(status, items)| *status == 404 || (*status == 200 && *items == Some(0))),
        "nothing of St Anne's study reached CHU Bruno's viewer: {seen_by_bruno:#}"
    );
}
