//! The first read in a real browser: headless Debian Chromium (driven by npm `playwright-core`,
//! `tests/browser/ohif.mjs`) opens the OHIF viewer the node serves at `/viewer` on the study the
//! node just analysed: the CT renders, the SR's ROIs are drawn on their slices, the SEG overlay
//! shows, and nothing goes wrong in the console, the network or the viewer's notifications.
//! The node runs both model packages: the COVID-19 read's SR ROIs and SEG are checked first, then
//! the emphysema read's SR (no ROIs: classes and values) and its four-segment SEG.
//! Screenshots go to `target/ohif-screenshots/` (the ones in `docs/screenshots/` come from here).
//! The node serves HTTPS with a test CA's certificate, which the browser trusts by its key.

use std::process::Command;
use std::time::Duration;

use firstread_e2e::pki::Ca;
use firstread_e2e::{dcmtk, eventually_async, repo_root, run, sample_series, serve_with_https_and, TestDb, TEST_TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ohif_shows_the_ct_the_sr_rois_and_the_seg_overlay() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = tempfile::tempdir().expect("dir");
    let ca = Ca::new(pki.path(), "hospital-ca");
    let certificate = ca.issue("firstread");
    let both = ("FIRSTREAD_WORKER__MODELS", "[\"covid19-lung-ct\", \"emphysema-ct\"]".to_owned());
    let (_node, dimse, http) = serve_with_https_and(&db, dir.path(), &certificate, &[both]);
    let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");

    let files = sample_series("");
    let sent = eventually_async(Duration::from_secs(60), || {
        let files = files.clone();
        async move {
            let out = run({
                let mut c = dcmtk("storescu");
                c.args(["-aec", "FIRSTREAD", "-aet", "MODALITY", "127.0.0.1", &dimse.to_string()]).args(&files);
                c
            });
            out.status.success()
        }
    })
    .await;
    assert!(sent, "storescu could not send the sample");
    // the result objects are indexed when the analysis job is done
    let analysed = eventually_async(Duration::from_secs(180), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM jobs WHERE kind = 'analysis' AND state = 'done' AND result->>'status' = 'analysed'",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or(0)
            == 2
    })
    .await;
    assert!(analysed, "the sample was not analysed");
    let study: String =
        sqlx::query_scalar("SELECT study_instance_uid FROM studies").fetch_one(&pool).await.expect("study");

    let out_dir = repo_root().join("target/ohif-screenshots");
    std::fs::create_dir_all(&out_dir).expect("screenshot dir");
    let viewer = |filters: &[&str], out: &std::path::Path| {
        let out = run({
            let mut c = Command::new("node");
            c.arg(repo_root().join("tests/browser/ohif.mjs"))
                .args(["--base", &format!("https://127.0.0.1:{http}"), "--study", &study, "--token", TEST_TOKEN])
                .args(["--trust-spki", &certificate.spki_sha256()])
                // the script's own QIDO-RS requests (Node's fetch) trust the test CA
                .env("NODE_EXTRA_CA_CERTS", &ca.certificate)
                .arg("--out")
                .arg(out)
                .args(filters)
                .args(["--timeout-ms", "90000"]);
            c
        });
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let summary: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("ohif.mjs printed no JSON ({e}):\n{stdout}\n{stderr}"));
        (out.status.success(), summary, stderr)
    };
    let (ok, summary, stderr) = viewer(&["--sr-filter", "^firstread ", "--seg-filter", "covid19-lung-ct"], &out_dir);
    assert_eq!(summary["ct_rendered"], true, "{summary:#}");
    assert_eq!(summary["cross_origin_isolated"], true, "{summary:#}");
    assert!(summary["sr_rois"].as_u64().unwrap_or(0) >= 1, "SR ROIs drawn: {summary:#}");
    assert!(summary["seg_segments"].as_u64().unwrap_or(0) >= 3, "SEG segments listed: {summary:#}");
    assert_eq!(summary["console_errors"], serde_json::json!([]), "{summary:#}");
    assert_eq!(summary["failed_requests"], serde_json::json!([]), "{summary:#}");
    assert_eq!(summary["error_notifications"], serde_json::json!([]), "{summary:#}");
    assert!(ok && summary["ok"] == true, "{summary:#}\n{stderr}");

    // the emphysema read: its two SRs open without a crash (shown as text: no ROIs), its SEG lists
    // the lungs, the opacity and the low attenuation area
    let emphysema_dir = out_dir.join("emphysema");
    std::fs::create_dir_all(&emphysema_dir).expect("screenshot dir");
    let (ok, summary, stderr) =
        viewer(&["--sr-filter", "emphysema-ct", "--seg-filter", "emphysema-ct", "--no-rois"], &emphysema_dir);
    assert_eq!(summary["ct_rendered"], true, "{summary:#}");
    assert_eq!(summary["sr"].as_array().map(Vec::len), Some(2), "the emphysema SRs: {summary:#}");
    assert_eq!(summary["seg_segments"], 4, "SEG segments listed: {summary:#}");
    assert_eq!(summary["console_errors"], serde_json::json!([]), "{summary:#}");
    assert_eq!(summary["failed_requests"], serde_json::json!([]), "{summary:#}");
    assert_eq!(summary["error_notifications"], serde_json::json!([]), "{summary:#}");
    assert!(ok && summary["ok"] == true, "{summary:#}\n{stderr}");
}
