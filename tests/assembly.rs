//! Study assembly and the job queue against the real PostgreSQL, with real `firstread work`
//! processes for the multi-worker and crash cases.

use std::time::Duration;

use firstread::Roles;
use firstread_e2e::*;

const STUDY: &str = "1.2.826.0.1.3680043.10.543.1";

async fn jobs_of(node: &TestNode, study: &str) -> Vec<(i32, String)> {
    sqlx::query_as("SELECT study_version, state FROM jobs WHERE study_instance_uid = $1 ORDER BY study_version")
        .bind(study)
        .fetch_all(&node.pool)
        .await
        .expect("jobs")
}

async fn wait_jobs(node: &TestNode, study: &str, n: usize, timeout: Duration) -> Vec<(i32, String)> {
    eventually_async(timeout, || async { jobs_of(node, study).await.iter().filter(|j| j.1 == "done").count() >= n })
        .await;
    jobs_of(node, study).await
}

/// Two series of one study over two associations, `pause` apart.
async fn two_series(node: &TestNode, pause: Duration) {
    send_tiny_series(node.addr(), STUDY, &format!("{STUDY}.1"), 0..10).await;
    tokio::time::sleep(pause).await;
    send_tiny_series(node.addr(), STUDY, &format!("{STUDY}.2"), 0..10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_shorter_than_stable_after_yields_one_job() {
    // stable_after itself: early readiness (on by default) is off here, since a pause of 600 ms
    // between two associations is longer than its grace
    let node = TestNode::start(|c| {
        c.assembly.stable_after = Duration::from_secs(2);
        c.assembly.early_ready = false;
    })
    .await;
    two_series(&node, Duration::from_millis(600)).await;
    let jobs = wait_jobs(&node, STUDY, 1, Duration::from_secs(15)).await;
    assert_eq!(jobs, vec![(1, "done".to_owned())]);
    // Nothing more comes: still one job well after stability.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(jobs_of(&node, STUDY).await.len(), 1);
    let seen = node.count("SELECT count(*) FROM instances WHERE received_at <= (SELECT started_at FROM jobs)").await;
    assert_eq!(seen, 20, "the one analysis started after both series arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_longer_than_stable_after_opens_a_second_version_only_with_reanalysis() {
    for reanalyse in [true, false] {
        let node = TestNode::start(|c| {
            c.assembly.stable_after = Duration::from_secs(1);
            c.assembly.reanalyse_late = reanalyse;
        })
        .await;
        send_tiny_series(node.addr(), STUDY, &format!("{STUDY}.1"), 0..10).await;
        assert_eq!(wait_jobs(&node, STUDY, 1, Duration::from_secs(15)).await, vec![(1, "done".to_owned())]);
        send_tiny_series(node.addr(), STUDY, &format!("{STUDY}.2"), 0..10).await;
        if reanalyse {
            let jobs = wait_jobs(&node, STUDY, 2, Duration::from_secs(15)).await;
            assert_eq!(jobs, vec![(1, "done".to_owned()), (2, "done".to_owned())]);
        } else {
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert_eq!(jobs_of(&node, STUDY).await, vec![(1, "done".to_owned())], "late arrival stored only");
        }
        assert_eq!(node.count("SELECT count(*) FROM instances").await, 20, "every instance stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_readiness_for_a_released_contiguous_series_but_not_for_a_gap() {
    // early_ready is on by default
    let node = TestNode::start(|c| c.assembly.stable_after = Duration::from_secs(30)).await;
    let gap_study = "1.2.826.0.1.3680043.10.543.2";
    send_tiny_series(node.addr(), STUDY, &format!("{STUDY}.1"), 0..10).await;
    // Slices 0..5 and 6..12 in one association: a missing slice (a gap of twice the spacing), and
    // 11 slices, enough for the model (10), so the series is a candidate. Sent over two
    // associations, the first half alone would be released and contiguous, but too short.
    send_tiny_series(node.addr(), gap_study, &format!("{gap_study}.1"), (0..5).chain(6..12)).await;
    let jobs = wait_jobs(&node, STUDY, 1, Duration::from_secs(10)).await;
    assert_eq!(jobs, vec![(1, "done".to_owned())], "ready well before stable_after (30 s)");
    assert!(jobs_of(&node, gap_study).await.is_empty(), "a series with a gap waits for stable_after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_associations_of_one_sender_make_one_study_version_early() {
    let node = TestNode::start(|c| c.assembly.stable_after = Duration::from_secs(30)).await;
    // one association per series, the next opened as soon as the previous one is released
    for series in 1..=3 {
        send_tiny_series(node.addr(), STUDY, &format!("{STUDY}.{series}"), 0..10).await;
    }
    let jobs = wait_jobs(&node, STUDY, 1, Duration::from_secs(10)).await;
    assert_eq!(jobs, vec![(1, "done".to_owned())], "ready well before stable_after (30 s)");
    let seen = node.count("SELECT count(*) FROM instances WHERE received_at <= (SELECT created_at FROM jobs)").await;
    assert_eq!(seen, 30, "ready after the last series, not after the first");
    assert_eq!(node.count("SELECT version::int8 FROM studies").await, 1, "one study version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_association_of_the_same_sender_holds_early_readiness_back() {
    let node = TestNode::start(|c| c.assembly.stable_after = Duration::from_secs(30)).await;
    send_tiny_series(node.addr(), STUDY, &format!("{STUDY}.1"), 0..10).await;
    // The sender opens its next association and stays silent longer than the grace: the study waits.
    let ct = "1.2.840.10008.5.1.4.1.1.2";
    let scu = RawScu::connect(node.addr(), "FIRSTREAD", &[(ct, "1.2.840.10008.1.2.1")]).await.expect("associate");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(jobs_of(&node, STUDY).await.is_empty(), "held back while the sender has an association open");
    scu.release().await;
    let jobs = wait_jobs(&node, STUDY, 1, Duration::from_secs(10)).await;
    assert_eq!(jobs, vec![(1, "done".to_owned())], "ready after the release, well before stable_after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_always_fails_ends_dead_with_its_error() {
    let node = TestNode::start(|c| {
        c.assembly.stable_after = Duration::from_millis(800);
        c.worker.max_attempts = 3;
        c.worker.backoff_base = Duration::from_millis(100);
    })
    .await;
    send_tiny_series(node.addr(), STUDY, &format!("{STUDY}.1"), 0..5).await;
    // Lose the files before the study is analysed: every attempt fails.
    std::fs::remove_dir_all(node.dir.path().join("studies")).expect("remove files");
    let dead = eventually_async(Duration::from_secs(20), || async {
        node.count("SELECT count(*) FROM jobs WHERE state = 'dead'").await == 1
    })
    .await;
    assert!(dead, "job dead");
    let (attempts, error): (i32, String) =
        sqlx::query_as("SELECT attempts, last_error FROM jobs").fetch_one(&node.pool).await.expect("job");
    assert_eq!(attempts, 3);
    assert!(error.contains("unreadable"), "{error}");
    assert_eq!(node.count("SELECT count(*) FROM job_runs WHERE outcome = 'failed'").await, 3);
    let status = firstread::status::render(&node.pool, 10).await.expect("status");
    assert!(status.contains("dead") && status.contains("attempt 3/3") && status.contains("unreadable"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_analyse_100_studies_exactly_once() {
    let node = TestNode::start_roles(Roles { listen: true, work: false }, |c| {
        c.assembly.stable_after = Duration::from_millis(300);
    })
    .await;
    for s in 0..100 {
        let study = format!("1.2.826.0.1.3680043.10.544.{s}");
        send_tiny_series(node.addr(), &study, &format!("{study}.1"), 0..3).await;
    }
    let env = node_env(&node.db, node.dir.path(), 0);
    let workers: Vec<Process> = (0..2)
        .map(|_| {
            let mut env = env.clone();
            env.push(("FIRSTREAD_WORKER__HOLD_FOR", "20ms".into()));
            Process::start(&["work"], &env)
        })
        .collect();
    let all_done = eventually_async(Duration::from_secs(90), || async {
        node.count("SELECT count(*) FROM jobs WHERE state = 'done'").await == 100
    })
    .await;
    assert!(all_done, "100 jobs done");
    drop(workers);
    assert_eq!(node.count("SELECT count(*) FROM jobs").await, 100, "one job per study");
    assert_eq!(node.count("SELECT count(*) FROM job_runs").await, 100, "each analysed exactly once");
    assert_eq!(node.count("SELECT count(DISTINCT job_id) FROM job_runs WHERE outcome = 'done'").await, 100);
    let workers_used = node.count("SELECT count(DISTINCT split_part(worker, '/', 1)) FROM job_runs").await;
    assert_eq!(workers_used, 2, "both worker processes took jobs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_is_finished_by_the_other_once() {
    let node = TestNode::start_roles(Roles { listen: true, work: false }, |c| {
        c.assembly.stable_after = Duration::from_millis(300);
    })
    .await;
    let mut env = node_env(&node.db, node.dir.path(), 0);
    env.push(("FIRSTREAD_WORKER__HOLD_FOR", "4s".into()));
    env.push(("FIRSTREAD_WORKER__LEASE", "2s".into()));
    let mut first = Process::start(&["work"], &env);
    send_tiny_series(node.addr(), STUDY, &format!("{STUDY}.1"), 0..5).await;
    let running = eventually_async(Duration::from_secs(20), || async {
        node.count("SELECT count(*) FROM jobs WHERE state = 'running'").await == 1
    })
    .await;
    assert!(running, "the first worker holds the job");
    let first_owner: String =
        sqlx::query_scalar("SELECT lease_owner FROM jobs").fetch_one(&node.pool).await.expect("owner");
    first.kill9();
    let _second = Process::start(&["work"], &env);
    let done = eventually_async(Duration::from_secs(30), || async {
        node.count("SELECT count(*) FROM jobs WHERE state = 'done'").await == 1
    })
    .await;
    assert!(done, "finished by the other worker after the lease expired");
    let (attempts,): (i32,) = sqlx::query_as("SELECT attempts FROM jobs").fetch_one(&node.pool).await.expect("job");
    assert_eq!(attempts, 2);
    let runs: Vec<(String, String)> =
        sqlx::query_as("SELECT worker, outcome FROM job_runs").fetch_all(&node.pool).await.expect("runs");
    assert_eq!(runs.len(), 1, "completed once: {runs:?}");
    assert_ne!(runs[0].0, first_owner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_receive_recovers_and_analyses_once() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut env = node_env(&db, dir.path(), port);
    env.push(("FIRSTREAD_ASSEMBLY__STABLE_AFTER", "1s".into()));
    env.push(("FIRSTREAD_ASSEMBLY__ASSOCIATION_STALE_AFTER", "3s".into()));
    env.push(("FIRSTREAD_ASSEMBLY__HEARTBEAT_INTERVAL", "500ms".into()));
    let mut node = Process::start(&["serve"], &env);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(
        eventually_async(Duration::from_secs(20), || async { tokio::net::TcpStream::connect(addr).await.is_ok() })
            .await,
        "node listens"
    );
    let ct = "1.2.840.10008.5.1.4.1.1.2";
    let series = format!("{STUDY}.1");
    let mut scu = RawScu::connect(addr, "FIRSTREAD", &[(ct, "1.2.840.10008.1.2.1")]).await.expect("associate");
    let mut acknowledged = Vec::new();
    for i in 0..8u32 {
        let sop = format!("{series}.{i}");
        let (status, _) = scu.store(i as u16 + 1, ct, &sop, &tiny_ct(STUDY, &series, &sop, f64::from(i))).await;
        assert_eq!(status, 0);
        acknowledged.push(sop);
    }
    // Half of the ninth instance, then the node dies.
    let pc = scu.context_id(ct);
    let ninth = tiny_ct(STUDY, &series, &format!("{series}.8"), 8.0);
    scu.send_command(pc, 9, ct, &format!("{series}.8")).await;
    scu.send_data(pc, &ninth[..ninth.len() / 2], 64, false).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.kill9();
    scu.drop_connection();

    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&db.url).await.expect("pool");
    let indexed: Vec<String> = sqlx::query_scalar("SELECT sop_instance_uid FROM instances ORDER BY sop_instance_uid")
        .fetch_all(&pool)
        .await
        .expect("rows");
    acknowledged.sort();
    assert_eq!(indexed, acknowledged, "every acknowledged instance indexed, nothing else");
    let paths: Vec<String> = sqlx::query_scalar("SELECT path FROM instances").fetch_all(&pool).await.expect("paths");
    assert!(paths.iter().all(|p| dir.path().join(p).is_file()), "every acknowledged instance on disk");

    let _restarted = Process::start(&["serve"], &env);
    let done = eventually_async(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE state = 'done'")
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
            == 1
    })
    .await;
    assert!(done, "the study became ready after the dead node's association went stale");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM job_runs").fetch_one(&pool).await.expect("runs");
    assert_eq!(runs, 1, "analysed once");
    assert!(incoming_parts(dir.path()).is_empty(), "the partial instance was cleared at restart");
    pool.close().await;
}
