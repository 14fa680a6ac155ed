//! Which studies a model package takes (its manifest's `[takes]`), on a real PostgreSQL: study
//! assembly creates an analysis job only for the model versions that take a study (site, calling
//! AE title, Body Part Examined of a CT series), marks the study version assembled either way, and
//! re-analysis queues only the studies the version takes.

mod common;

use std::time::Duration;

use common::{create_db, drop_db, series};
use firstread_queue::assembly::{Assembly, AssemblyConfig, ModelVersion};
use firstread_queue::reanalysis::{queue_reanalysis, Reanalysis};
use firstread_store::candidate::Takes;
use sqlx::postgres::PgPool;

/// A study of `site` ready for promotion (stable, analysable, version 1 not yet queued), first
/// received from `calling_ae`, with a CT series of each Body Part Examined in `body_parts`, the
/// first holding one instance sent by `calling_ae`.
async fn ready_study(pool: &PgPool, site: &str, study: &str, calling_ae: &str, body_parts: &[Option<&str>]) {
    sqlx::query(
        "INSERT INTO studies (site, study_instance_uid, analysable, stable_at, last_image_at, calling_ae_title, \
             called_ae_title, peer_address) \
         VALUES ($1, $2, true, now() - interval '1 second', now(), $3, 'FIRSTREAD', '127.0.0.1')",
    )
    .bind(site)
    .bind(study)
    .bind(calling_ae)
    .execute(pool)
    .await
    .expect("study");
    for (i, part) in body_parts.iter().enumerate() {
        series(pool, site, study, &format!("{study}.{}", i + 1), *part).await;
    }
    sqlx::query(
        "INSERT INTO instances (site, sop_instance_uid, series_instance_uid, study_instance_uid, sop_class_uid, \
             transfer_syntax_uid, path, size_bytes, calling_ae_title, called_ae_title, peer_address) \
         VALUES ($1, $2 || '.9.1', $2 || '.1', $2, '1.2.840.10008.5.1.4.1.1.2', '1.2.840.10008.1.2.1', 'x.dcm', 1, $3, \
             'FIRSTREAD', '127.0.0.1')",
    )
    .bind(site)
    .bind(study)
    .bind(calling_ae)
    .execute(pool)
    .await
    .expect("instance");
}

fn model(name: &str, takes: Takes) -> ModelVersion {
    ModelVersion { name: name.into(), version: "1.0.0".into(), shadow: false, takes }
}

#[tokio::test]
async fn assembly_queues_only_the_models_that_take_the_study() {
    let (pool, name) = create_db().await;
    let chest = Takes { body_part: vec!["CHEST".into(), "LUNG".into()], ..Takes::default() };
    let north_only = Takes { site: vec!["north".into()], ..Takes::default() };
    let from_north_ct = Takes { calling_ae_title: vec!["CT_NORTH".into()], ..Takes::default() };
    let config = AssemblyConfig {
        models: vec![
            model("chest", chest.clone()),
            model("north", north_only),
            model("from-north-ct", from_north_ct),
            model("any", Takes::default()),
        ],
        max_attempts: 3,
        association_stale_after: Duration::from_secs(30),
        early_ready: false,
        early_ready_grace: Duration::from_millis(500),
        early_ready_trust_after: 3,
        early_min_slices: 10,
    };
    let assembly = Assembly::new(pool.clone(), "node-1", config.clone());
    // (site, study, calling AE, Body Part Examined of its series)
    let studies: [(&str, &str, &str, &[Option<&str>]); 5] = [
        ("north", "1.1", "CT_NORTH", &[Some("CHEST")]),
        ("south", "1.2", "CT_SOUTH", &[Some("HEAD")]),
        ("south", "1.3", "CT_NORTH", &[None]),
        ("north", "1.4", "CT_SOUTH", &[Some("HEAD"), Some("CHEST")]),
        ("south", "1.5", "CT_SOUTH", &[Some(" lung ")]),
    ];
    for (site, study, ae, parts) in studies {
        ready_study(&pool, site, study, ae, parts).await;
    }
    let promoted = assembly.promote().await.expect("promote");
    let mut jobs: Vec<(String, String)> =
        promoted.iter().map(|p| (p.study_instance_uid.clone(), p.model.clone())).collect();
    jobs.sort();
    let expected = [
        ("1.1", "any"),
        ("1.1", "chest"),
        ("1.1", "from-north-ct"),
        ("1.1", "north"),
        // 1.2: a head CT of the south, sent by CT_SOUTH: only the model that takes anything
        ("1.2", "any"),
        // no Body Part Examined: taken by the chest model (absent is taken by default)
        ("1.3", "any"),
        ("1.3", "chest"),
        ("1.3", "from-north-ct"),
        ("1.4", "any"),
        ("1.4", "chest"),
        ("1.4", "north"),
        // " lung " is LUNG
        ("1.5", "any"),
        ("1.5", "chest"),
    ];
    assert_eq!(jobs, expected.map(|(s, m)| (s.to_owned(), m.to_owned())));
    // every ready study version is assembled, whether or not a model took it
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM studies WHERE queued_version < version")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(pending, 0);

    // a node whose only model takes no study of these: no job, nothing left pending
    ready_study(&pool, "south", "1.6", "CT_SOUTH", &[Some("ABDOMEN")]).await;
    let strict = Takes { body_part_absent: false, ..chest.clone() };
    let chest_only =
        Assembly::new(pool.clone(), "node-2", AssemblyConfig { models: vec![model("chest", strict)], ..config });
    assert!(chest_only.promote().await.expect("promote").is_empty());
    let queued: i32 = sqlx::query_scalar("SELECT queued_version FROM studies WHERE study_instance_uid = '1.6'")
        .fetch_one(&pool)
        .await
        .expect("queued");
    assert_eq!(queued, 1);

    // re-analysis with the chest model's takes: the studies with a chest series or none
    let request = Reanalysis {
        model: "chest",
        model_version: "2.0.0",
        shadow: false,
        takes: &chest,
        since: chrono::Utc::now() - chrono::Duration::days(1),
        site: None,
        max_attempts: 3,
        dry_run: false,
    };
    let summary = queue_reanalysis(&pool, &request).await.expect("reanalysis");
    let mut studies: Vec<String> = sqlx::query_scalar(
        "SELECT study_instance_uid FROM jobs WHERE model = 'chest' AND model_version = '2.0.0' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("jobs");
    studies.dedup();
    assert_eq!(studies, ["1.1", "1.3", "1.4", "1.5"]);
    assert_eq!((summary.queued(), summary.skipped()), (4, 0));
    drop_db(pool, &name).await;
}
