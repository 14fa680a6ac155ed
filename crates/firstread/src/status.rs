//! `firstread status`: studies, their assembly state and their jobs, for an operator.
//! Identifiers only: no patient names or IDs.

use std::fmt::Write;

use sqlx::postgres::PgPool;
use sqlx::Row;

/// Renders the most recent `limit` studies and their jobs as a text table.
///
/// # Errors
/// Database errors.
pub async fn render(pool: &PgPool, limit: i64) -> Result<String, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT s.study_instance_uid, s.version, s.queued_version, s.analysable, \
                (SELECT count(*) FROM instances i WHERE i.site = s.site AND i.study_instance_uid = s.study_instance_uid), \
                CASE WHEN s.stable_at > now() THEN 'receiving' \
                     WHEN s.analysable AND s.queued_version < s.version THEN 'stable, waiting for senders' \
                     WHEN NOT s.analysable THEN 'stored (nothing to analyse)' ELSE 'queued' END, \
                s.calling_ae_title, to_char(s.last_received_at, 'YYYY-MM-DD HH24:MI:SS'), s.site \
         FROM studies s ORDER BY s.last_received_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<66} {:>4} {:>9} {:<28} {:<16} {:<19} SITE",
        "STUDY", "VER", "INSTANCES", "ASSEMBLY", "FROM", "LAST RECEIVED"
    );
    for r in rows {
        let study: String = r.try_get(0)?;
        let version: i32 = r.try_get(1)?;
        let count: i64 = r.try_get(4)?;
        let state: String = r.try_get(5)?;
        let from: String = r.try_get(6)?;
        let last: String = r.try_get(7)?;
        let site: String = r.try_get(8)?;
        let _ = writeln!(out, "{study:<66} {version:>4} {count:>9} {state:<28} {from:<16} {last:<19} {site}");
        let jobs = sqlx::query(
            "SELECT id, kind, study_version, model, destination, state, attempts, max_attempts, coalesce(last_error, ''), \
                 model_version, shadow \
             FROM jobs WHERE site = $2 AND study_instance_uid = $1 ORDER BY id",
        )
        .bind(&study)
        .bind(&site)
        .fetch_all(pool)
        .await?;
        for j in jobs {
            let (id, kind, v, model, dest, state, attempts, max): (i64, String, i32, String, String, String, i32, i32) = (
                j.try_get(0)?,
                j.try_get(1)?,
                j.try_get(2)?,
                j.try_get(3)?,
                j.try_get(4)?,
                j.try_get(5)?,
                j.try_get(6)?,
                j.try_get(7)?,
            );
            let error: String = j.try_get(8)?;
            let (model_version, shadow): (String, bool) = (j.try_get(9)?, j.try_get(10)?);
            let model = match (model_version.is_empty(), shadow) {
                (true, _) => model,
                (false, false) => format!("{model} {model_version}"),
                (false, true) => format!("{model} {model_version} (shadow)"),
            };
            let target = if dest.is_empty() { model } else { format!("{model} -> {dest}") };
            let _ = write!(out, "    job {id:<6} {kind:<8} v{v:<3} {target:<28} {state:<8} attempt {attempts}/{max}");
            if !error.is_empty() {
                let _ = write!(out, "  last error: {error}");
            }
            out.push('\n');
        }
    }
    Ok(out)
}
