//! Queue priorities on a real PostgreSQL (FIRSTREAD_TEST_PG, default the local server): a live
//! analysis job queued after a backlog of 50 re-analysis jobs is the next job claimed; the
//! backlog then drains oldest first; re-analysis skips what the model version already read.

use std::time::Duration;

mod common;

use common::{create_db, drop_db};
use firstread_queue::reanalysis::{queue_reanalysis, Reanalysis, REANALYSIS_PRIORITY};
use firstread_queue::{JobKind, JobQueue, NewJob, PgQueue};
use firstread_store::candidate::Takes;
use sqlx::postgres::PgPool;

/// An analysed study (version 1 queued, one CT series) received `age_days` ago.
async fn stored_study(pool: &PgPool, site: &str, study: &str, age_days: i32) {
    sqlx::query(
        "INSERT INTO studies (site, study_instance_uid, analysable, queued_version, last_image_at, last_received_at, \
             calling_ae_title, called_ae_title, peer_address) \
         VALUES ($1, $2, true, 1, now() - make_interval(days => $3), now() - make_interval(days => $3), 'CT', 'FIRSTREAD', '127.0.0.1')",
    )
    .bind(site)
    .bind(study)
    .bind(age_days)
    .execute(pool)
    .await
    .expect("study");
    common::series(pool, site, study, &format!("{study}.1"), Some("CHEST")).await;
}

/// A live analysis job (priority 0) of site "north", study version 1; its id.
async fn live_job(queue: &PgQueue, study: &str, model_version: &str) -> i64 {
    queue
        .enqueue(&NewJob {
            kind: JobKind::Analysis,
            site: "north",
            study_instance_uid: study,
            study_version: 1,
            model: "covid19-lung-ct",
            model_version,
            destination: "",
            part: "",
            payload: &serde_json::json!({}),
            max_attempts: 3,
        })
        .await
        .expect("enqueue")
        .expect("created")
}

#[tokio::test]
async fn a_live_job_is_claimed_before_a_reanalysis_backlog() {
    let (pool, name) = create_db().await;
    for i in 0..50 {
        stored_study(&pool, if i % 2 == 0 { "north" } else { "south" }, &format!("1.2.3.{i}"), 3).await;
    }
    let since = chrono::Utc::now() - chrono::Duration::days(7);
    let any = Takes::default();
    let request = |dry_run| Reanalysis {
        model: "covid19-lung-ct",
        model_version: "0.2.1",
        shadow: false,
        takes: &any,
        since,
        site: None,
        max_attempts: 3,
        dry_run,
    };
    let dry = queue_reanalysis(&pool, &request(true)).await.expect("dry run");
    assert_eq!((dry.queued(), dry.skipped()), (50, 0));
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&pool).await.expect("count");
    assert_eq!(queued, 0, "a dry run queues nothing");
    let summary = queue_reanalysis(&pool, &request(false)).await.expect("reanalysis");
    assert_eq!((summary.queued(), summary.skipped()), (50, 0));
    assert_eq!((summary.sites["north"].queued, summary.sites["south"].queued), (25, 25));
    let priorities: Vec<i16> =
        sqlx::query_scalar("SELECT DISTINCT priority FROM jobs").fetch_all(&pool).await.expect("priorities");
    assert_eq!(priorities, [REANALYSIS_PRIORITY]);

    // a live study arrives after the backlog
    let queue = PgQueue::new(pool.clone());
    let live = live_job(&queue, "9.9.9", "0.2.1").await;
    let lease = Duration::from_secs(60);
    let first = queue.claim(JobKind::Analysis, "w1", lease).await.expect("claim").expect("a job");
    assert_eq!((first.id, first.study_instance_uid.as_str()), (live, "9.9.9"), "the live job first");
    // then the backlog, oldest first
    let second = queue.claim(JobKind::Analysis, "w1", lease).await.expect("claim").expect("a job");
    let oldest: i64 =
        sqlx::query_scalar("SELECT min(id) FROM jobs WHERE priority < 0").fetch_one(&pool).await.expect("min");
    assert_eq!(second.id, oldest);

    // the claim's order is the index's (no sort of the queued jobs)
    let mut tx = pool.begin().await.expect("tx");
    sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await.expect("set");
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM jobs WHERE kind = 'analysis' AND \
           ((state = 'queued' AND run_after <= now()) \
            OR (state = 'running' AND lease_expires_at < now() AND attempts < max_attempts)) \
         ORDER BY priority DESC, run_after, id LIMIT 1",
    )
    .fetch_all(&mut *tx)
    .await
    .expect("explain");
    tx.rollback().await.expect("rollback");
    let plan = plan.join("\n");
    assert!(plan.contains("jobs_claimable_idx") && !plan.contains("Sort"), "{plan}");

    // a purged study cannot be read again: left out
    sqlx::query("UPDATE studies SET purged_at = now() WHERE study_instance_uid = '1.2.3.0'")
        .execute(&pool)
        .await
        .expect("purge");
    // again: everything is queued already, per site
    let again = queue_reanalysis(&pool, &request(false)).await.expect("again");
    assert_eq!((again.queued(), again.skipped()), (0, 49));
    // a site filter and a date after every study
    let north =
        queue_reanalysis(&pool, &Reanalysis { site: Some("north"), model_version: "0.3.0", ..request(true) }).await;
    assert_eq!(north.expect("north").sites.keys().collect::<Vec<_>>(), ["north"]);
    let none = queue_reanalysis(&pool, &Reanalysis { since: chrono::Utc::now(), ..request(true) }).await;
    assert_eq!(none.expect("none").queued(), 0);
    drop_db(pool, &name).await;
}

/// A study still arriving (pending assembly, its stability deadline ahead) holds back the
/// re-analysis backlog, so that a worker is free when it becomes ready; a live job is claimed
/// as always; a study stuck pending longer than `ARRIVING_WINDOW` past its deadline holds
/// nothing back.
#[tokio::test]
async fn a_study_on_its_way_holds_back_the_backlog() {
    let (pool, name) = create_db().await;
    for i in 0..3 {
        stored_study(&pool, "north", &format!("1.2.3.{i}"), 3).await;
    }
    let since = chrono::Utc::now() - chrono::Duration::days(7);
    let any = Takes::default();
    let request = Reanalysis {
        model: "covid19-lung-ct",
        model_version: "0.2.2",
        shadow: false,
        takes: &any,
        since,
        site: None,
        max_attempts: 3,
        dry_run: false,
    };
    assert_eq!(queue_reanalysis(&pool, &request).await.expect("reanalysis").queued(), 3);
    let queue = PgQueue::new(pool.clone());
    let lease = Duration::from_secs(60);
    // a live study is being received: version 1, not yet queued, stable in 5 s
    sqlx::query(
        "INSERT INTO studies (site, study_instance_uid, analysable, version, queued_version, stable_at, \
             last_image_at, last_received_at, calling_ae_title, called_ae_title, peer_address) \
         VALUES ('north', '9.9.9', true, 1, 0, now() + interval '5 seconds', now(), now(), 'CT', 'FIRSTREAD', '127.0.0.1')",
    )
    .execute(&pool)
    .await
    .expect("arriving study");
    let held = queue.claim(JobKind::Analysis, "w1", lease).await.expect("claim");
    assert!(held.is_none(), "no re-analysis starts while a study arrives: {held:?}");
    // its live job (another study's, already promoted) is claimed all the same
    let live = live_job(&queue, "8.8.8", "0.2.2").await;
    let first = queue.claim(JobKind::Analysis, "w1", lease).await.expect("claim").expect("the live job");
    assert_eq!(first.id, live);
    assert!(queue.claim(JobKind::Analysis, "w1", lease).await.expect("claim").is_none());
    // promoted (queued_version = version): the backlog runs again
    sqlx::query("UPDATE studies SET queued_version = 1 WHERE study_instance_uid = '9.9.9'")
        .execute(&pool)
        .await
        .expect("promote");
    let next = queue.claim(JobKind::Analysis, "w1", lease).await.expect("claim").expect("a re-analysis job");
    assert_eq!(next.study_instance_uid, "1.2.3.0");
    // a study stuck pending (its deadline long past, an association open but silent) holds nothing back
    sqlx::query(
        "UPDATE studies SET version = 2, stable_at = now() - make_interval(secs => $1) \
         WHERE study_instance_uid = '9.9.9'",
    )
    .bind(firstread_queue::jobs::ARRIVING_WINDOW.as_secs_f64() + 1.0)
    .execute(&pool)
    .await
    .expect("stuck");
    let after = queue.claim(JobKind::Analysis, "w1", lease).await.expect("claim").expect("a re-analysis job");
    assert_eq!(after.study_instance_uid, "1.2.3.1");
    drop_db(pool, &name).await;
}

/// A job whose worker was lost: its lease expired. On an attempt left, it is claimed again; on
/// its last attempt, it is not claimable, and `reap` ends it as dead once and returns it (the
/// worker then tells its handler).
#[tokio::test]
async fn a_job_whose_worker_was_lost_on_its_last_attempt_is_reaped_once() {
    let (pool, name) = create_db().await;
    stored_study(&pool, "north", "9.9.1", 0).await;
    stored_study(&pool, "north", "9.9.2", 0).await;
    let queue = PgQueue::new(pool.clone());
    let last = live_job(&queue, "9.9.1", "0.2.1").await;
    let again = live_job(&queue, "9.9.2", "0.2.1").await;
    let lease = Duration::from_secs(60);
    for _ in 0..2 {
        queue.claim(JobKind::Analysis, "lost", lease).await.expect("claim").expect("a job");
    }
    // both workers are lost; the first job was on its last attempt
    sqlx::query("UPDATE jobs SET lease_expires_at = now() - interval '1 second'").execute(&pool).await.expect("expire");
    sqlx::query("UPDATE jobs SET attempts = max_attempts WHERE id = $1").bind(last).execute(&pool).await.expect("last");
    let reaped = queue.reap(JobKind::Analysis).await.expect("reap");
    assert_eq!(reaped.iter().map(|j| j.id).collect::<Vec<_>>(), [last]);
    assert_eq!((reaped[0].study_instance_uid.as_str(), reaped[0].attempt), ("9.9.1", 3));
    let (state, error): (String, Option<String>) = sqlx::query_as("SELECT state, last_error FROM jobs WHERE id = $1")
        .bind(last)
        .fetch_one(&pool)
        .await
        .expect("job");
    assert_eq!(state, "dead");
    assert!(error.is_some_and(|e| e.contains("worker lost")));
    assert!(queue.reap(JobKind::Analysis).await.expect("reap").is_empty(), "reaped once");
    // the other one has attempts left: claimed again, never reaped
    let claimed = queue.claim(JobKind::Analysis, "w2", lease).await.expect("claim").expect("a job");
    assert_eq!((claimed.id, claimed.attempt), (again, 2));
    assert!(queue.claim(JobKind::Analysis, "w2", lease).await.expect("claim").is_none(), "the dead one is not claimed");
    drop_db(pool, &name).await;
}
