//! Retention on a database with studies of several ages (received over DIMSE, then aged in the
//! index): exactly the studies past `max_age` lose their received images, never one with an
//! unfinished job; the results, an index stub and the audit trail stay; a dry run removes
//! nothing; a storage quota purges the oldest remaining first; old associations are pruned.

use std::time::Duration;

use firstread::config::RetentionConfig;
use firstread::retention::{self, Reason};
use firstread_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_studies_lose_their_images_and_keep_their_results() {
    let node = TestNode::start_roles(firstread::Roles { listen: true, work: false }, |c| {
        c.assembly.stable_after = Duration::from_millis(200);
    })
    .await;
    // four studies of five slices each
    let studies = ["2.25.901", "2.25.902", "2.25.903", "2.25.904"];
    for study in studies {
        send_tiny_series(node.addr(), study, &format!("{study}.1"), 0..5).await;
    }
    let pool = &node.pool;
    // assembly queues an analysis of each (no worker runs here): all done but 902's
    let queued = eventually_async(Duration::from_secs(30), || async {
        node.count("SELECT count(*) FROM jobs WHERE kind = 'analysis'").await == 4
    })
    .await;
    assert!(queued, "an analysis job per study");
    sqlx::query("UPDATE jobs SET state = 'done', finished_at = now() WHERE study_instance_uid <> '2.25.902'")
        .execute(pool)
        .await
        .expect("done");
    // ages: 901 40 days, 902 35 days (its analysis still queued), 903 10 days, 904 today
    for (study, days) in [("2.25.901", 40), ("2.25.902", 35), ("2.25.903", 10), ("2.25.904", 0)] {
        // the instances arrived then too (a study's last_received_at is never before them)
        for (table, minutes) in [("studies SET last_received_at", 1), ("instances SET received_at", 2)] {
            sqlx::query(&format!(
                "UPDATE {table} = now() - make_interval(days => $2, mins => {minutes}) WHERE study_instance_uid = $1"
            ))
            .bind(study)
            .bind(days)
            .execute(pool)
            .await
            .expect("age");
        }
    }
    // a result object of 901, as the analysis writes it
    let result_path = "results/2.25.901/v1/m/1/00-sr.dcm";
    let result_file = node.config.storage.root.join(result_path);
    std::fs::create_dir_all(result_file.parent().expect("dir")).expect("dir");
    std::fs::write(&result_file, b"SR").expect("result");
    sqlx::query(
        "INSERT INTO series (series_instance_uid, study_instance_uid, modality) VALUES ('2.25.901.9', '2.25.901', 'SR')",
    )
    .execute(pool)
    .await
    .expect("result series");
    sqlx::query(
        "INSERT INTO instances (sop_instance_uid, series_instance_uid, study_instance_uid, sop_class_uid, \
             transfer_syntax_uid, path, size_bytes, calling_ae_title, called_ae_title, peer_address) \
         SELECT '2.25.901.9.1', '2.25.901.9', '2.25.901', '1.2.840.10008.5.1.4.1.1.88.34', '1.2.840.10008.1.2.1', $1, 2, \
             'FIRSTREAD', 'FIRSTREAD', '127.0.0.1:0'",
    )
    .bind(result_path)
    .execute(pool)
    .await
    .expect("result row");
    // an association closed long ago
    sqlx::query("UPDATE associations SET closed_at = now() - interval '100 days' WHERE id = (SELECT min(id::text)::uuid FROM associations)")
        .execute(pool)
        .await
        .expect("old association");
    let files_of = |study: &str| {
        let dir = node.config.storage.root.join("studies").join(study);
        files_under(&dir).len()
    };
    assert_eq!(studies.map(files_of), [5, 5, 5, 5]);

    let storage = firstread_store::Storage::open(&node.config.storage.root, false).await.expect("storage");
    let by_age = RetentionConfig { max_age: Some(Duration::from_secs(30 * 24 * 3600)), ..RetentionConfig::default() };
    // a dry run says what, and removes nothing
    let dry = retention::run(pool, &storage, &by_age, "FIRSTREAD", true).await.expect("dry run");
    let named: Vec<(&str, Reason)> = dry.studies.iter().map(|c| (c.study_instance_uid.as_str(), c.reason)).collect();
    assert_eq!(named, [("2.25.901", Reason::Age)], "902 has a job queued, 903 and 904 are young");
    assert_eq!(dry.studies[0].instances, 5);
    assert_eq!(studies.map(files_of), [5, 5, 5, 5]);

    let done = retention::run(pool, &storage, &by_age, "FIRSTREAD", false).await.expect("purge");
    assert_eq!(done.studies.len(), 1);
    assert_eq!(studies.map(files_of), [0, 5, 5, 5]);
    assert!(result_file.exists(), "the result object stays");
    let stub: (i64, Option<i32>, bool) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM instances WHERE study_instance_uid = '2.25.901'), purged_instances, \
             purged_at IS NOT NULL FROM studies WHERE study_instance_uid = '2.25.901'",
    )
    .fetch_one(pool)
    .await
    .expect("stub");
    assert_eq!(stub, (1, Some(5), true), "the SR row is left, and the stub says 5 purged");
    assert_eq!(
        node.count("SELECT count(*) FROM audit_events WHERE action = 'delete' AND study_instance_uid = '2.25.901'")
            .await,
        1
    );
    assert_eq!(done.associations_pruned, 1);

    // a quota: the oldest remaining eligible study goes first (902 still waits for its job)
    let per_study: i64 = dry.studies[0].bytes;
    let by_quota = RetentionConfig { max_storage_bytes: Some((2 * per_study) as u64), ..RetentionConfig::default() };
    let done = retention::run(pool, &storage, &by_quota, "FIRSTREAD", false).await.expect("purge");
    let named: Vec<(&str, Reason)> = done.studies.iter().map(|c| (c.study_instance_uid.as_str(), c.reason)).collect();
    assert_eq!(named, [("2.25.903", Reason::Quota)]);
    assert_eq!(studies.map(files_of), [0, 5, 0, 5]);
    // nothing left to do
    assert!(retention::run(pool, &storage, &by_quota, "FIRSTREAD", false).await.expect("purge").studies.is_empty());
    // another node purging holds the lock: this one skips its round
    let mut other = pool.acquire().await.expect("connection");
    sqlx::query("SELECT pg_advisory_lock(hashtext('firstread-retention'))").execute(&mut *other).await.expect("lock");
    let everything = RetentionConfig { max_age: Some(Duration::from_secs(1)), ..RetentionConfig::default() };
    assert!(retention::run(pool, &storage, &everything, "FIRSTREAD", false).await.expect("skip").studies.is_empty());
    assert_eq!(studies.map(files_of), [0, 5, 0, 5], "nothing purged while another node holds the lock");
}
