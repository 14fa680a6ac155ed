//! PostgreSQL restarted under a running node: the node reconnects and carries on.
//!
//! Its own test binary, with one test: cargo runs test binaries one after another, so restarting
//! the shared local PostgreSQL does not disturb other tests.

use std::process::Command;
use std::time::Duration;

use firstread_e2e::*;

fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("a local PostgreSQL cluster under /etc/postgresql");
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .expect("pg_ctlcluster");
    assert!(status.success(), "PostgreSQL restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_carries_on_after_a_postgresql_restart() {
    if std::env::var_os("FIRSTREAD_SKIP_PG_RESTART").is_some() {
        eprintln!("skipped: FIRSTREAD_SKIP_PG_RESTART set");
        return;
    }
    let node = TestNode::start(|c| c.assembly.stable_after = Duration::from_millis(500)).await;
    let before = "1.2.826.0.1.3680043.10.545.1";
    send_tiny_series(node.addr(), before, &format!("{before}.1"), 0..3).await;
    restart_postgres();

    // The node answers A700 while the database is away; a sender retries, as modalities do.
    let after = "1.2.826.0.1.3680043.10.545.2";
    let stored = eventually_async(Duration::from_secs(30), || async {
        let ct = "1.2.840.10008.5.1.4.1.1.2";
        let Ok(mut scu) = RawScu::connect(node.addr(), "FIRSTREAD", &[(ct, "1.2.840.10008.1.2.1")]).await else {
            return false;
        };
        let series = format!("{after}.1");
        let mut ok = true;
        for i in 0..3u32 {
            let sop = format!("{series}.{i}");
            ok &= scu.store(i as u16 + 1, ct, &sop, &tiny_ct(after, &series, &sop, f64::from(i))).await.0 == 0;
        }
        scu.release().await;
        ok
    })
    .await;
    assert!(stored, "the node stores again after the restart");
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&node.db.url).await.expect("pool");
    let done = eventually_async(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE state = 'done'")
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
            == 2
    })
    .await;
    assert!(done, "both studies analysed");
    let instances: i64 = sqlx::query_scalar("SELECT count(*) FROM instances").fetch_one(&pool).await.expect("count");
    assert_eq!(instances, 6);
}
