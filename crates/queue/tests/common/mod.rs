//! A database per test on a real PostgreSQL (FIRSTREAD_TEST_PG, default the local server), and
//! index rows written as the store writes them.
#![allow(dead_code)] // each test file uses its part

use sqlx::postgres::{PgPool, PgPoolOptions};

/// The server's maintenance database URL.
pub fn admin_url() -> String {
    std::env::var("FIRSTREAD_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A migrated database of its own, and its name (dropped by [`drop_db`]).
pub async fn create_db() -> (PgPool, String) {
    let name = format!("firstread_test_{}", uuid::Uuid::new_v4().simple());
    let admin = PgPoolOptions::new().max_connections(1).connect(&admin_url()).await.expect("PostgreSQL reachable");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create database");
    admin.close().await;
    let base = admin_url();
    let url = format!("{}/{name}", base.rsplit_once('/').map(|(b, _)| b).unwrap_or(&base));
    let pool = PgPoolOptions::new().max_connections(4).connect(&url).await.expect("connect");
    sqlx::migrate!("../../schemas").run(&pool).await.expect("migrations");
    (pool, name)
}

/// Drops the database of [`create_db`].
pub async fn drop_db(pool: PgPool, name: &str) {
    pool.close().await;
    let admin = PgPoolOptions::new().max_connections(1).connect(&admin_url()).await.expect("PostgreSQL reachable");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await.expect("drop");
}

/// A series of `study` (Modality CT, `body_part` as Body Part Examined), as the index holds it.
pub async fn series(pool: &PgPool, site: &str, study: &str, series: &str, body_part: Option<&str>) {
    sqlx::query(
        "INSERT INTO series (site, series_instance_uid, study_instance_uid, modality, body_part_examined) \
         VALUES ($1, $2, $3, 'CT', $4)",
    )
    .bind(site)
    .bind(series)
    .bind(study)
    .bind(body_part)
    .execute(pool)
    .await
    .expect("series");
}
