//! `firstread bench reanalysis`: a live study's time to result while a re-analysis backlog runs.
//!
//! The situation it measures: a new model version was installed, the node restarted with it
//! active, and `firstread reanalyse` queued every stored study for it. Live studies keep
//! arriving; the queue claims them before the backlog (`jobs.priority`, re-analysis at
//! [`REANALYSIS_PRIORITY`]) and starts no re-analysis job while a study is arriving
//! ([`firstread_queue::jobs::ARRIVING_WINDOW`]), so the re-analysis job running when a live
//! study's first instance arrives has its receiving and stability time to finish in.
//!
//! Steps, on one temporary database and storage folder:
//! 1. a node running the old version stores and analyses `studies` studies (made from the sample
//!    with [`resampled_series`], new UIDs each);
//! 2. a node running the new version (restarted on the same database and folder) times `runs`
//!    live studies on an idle queue (after one warm-up study, not counted);
//! 3. the re-analysis is queued ([`queue_reanalysis`], as `firstread reanalyse` does), and once
//!    a few of its jobs are done, `runs` live studies are timed while it runs (each with the
//!    number of re-analysis jobs still queued at its last C-STORE-RSP);
//! 4. when the backlog has drained, every stored study must have exactly one analysis by the new
//!    version, analysed, with its results exported.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use firstread_queue::reanalysis::{queue_reanalysis, Reanalysis, REANALYSIS_PRIORITY};
use sqlx::PgPool;

use super::resampled_series;
use crate::config::Config;
use crate::demo::{Session, TempDatabase};

/// One timed live study.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveRun {
    /// Last C-STORE-RSP -> SR acknowledged by the receiving AE (s).
    pub total_s: f64,
    /// Re-analysis jobs still queued (not started) at the study's last C-STORE-RSP.
    pub backlog_queued: i64,
}

/// What [`reanalysis_backlog`] measured.
#[derive(Debug, Clone)]
pub struct Backlog {
    /// Model name.
    pub model: String,
    /// The version the stored studies were read with.
    pub old_version: String,
    /// The version re-analysing them (active).
    pub new_version: String,
    /// Studies stored before the re-analysis.
    pub studies: usize,
    /// Slices per study.
    pub slices: usize,
    /// The node's `stable_after`.
    pub stable_after: Duration,
    /// Concurrent analysis jobs per node (`[worker] concurrency`).
    pub concurrency: usize,
    /// Live studies on an idle queue.
    pub idle: Vec<LiveRun>,
    /// Live studies while the backlog runs.
    pub busy: Vec<LiveRun>,
    /// Re-analysis jobs queued.
    pub queued: u64,
    /// Stored studies with exactly one analysis by the new version, analysed and exported.
    pub reanalysed_once: usize,
    /// From queuing the re-analysis to its last job done (s).
    pub backlog_s: f64,
    /// Median analysis job duration of the re-analysis (claim to done, s).
    pub job_median_s: f64,
}

/// Runs the benchmark (see the module documentation). `model` is `NAME`; the base
/// configuration's worker settings (threads, concurrency) apply to both nodes.
///
/// # Errors
/// PostgreSQL unreachable, a model version not installed, a study not analysed or delivered,
/// or the backlog not drained within 10 minutes.
#[allow(clippy::too_many_arguments)]
pub async fn reanalysis_backlog(
    base: &Config,
    postgres: &str,
    sample: &[PathBuf],
    model: &str,
    [old_version, new_version]: [&str; 2],
    studies: usize,
    runs: usize,
    stable_after: Duration,
) -> anyhow::Result<Backlog> {
    let db = TempDatabase::create(postgres).await?;
    let storage = tempfile::Builder::new().prefix("firstread-bench-").tempdir().context("temporary folder")?;
    let slices = 30;
    let measured = async {
        let tmp = tempfile::tempdir()?;
        let mut made = 0usize;
        let mut study = |sample: &[PathBuf]| -> anyhow::Result<Vec<PathBuf>> {
            made += 1;
            resampled_series(sample, slices, &tmp.path().join(made.to_string()))
        };
        // 1. the stored studies, read by the old version
        let old = running(base, model, old_version);
        let session = Session::start_in(&old, &db.url, storage.path(), stable_after, None).await?;
        let hidden = indicatif::ProgressBar::hidden();
        let seeded = async {
            for i in 0..studies {
                let files = study(sample)?;
                session.send(&files, &hidden).await.with_context(|| format!("storing study {i}"))?;
            }
            wait_until(session.node.index.pool(), "analysis and export of the stored studies", |pool| async move {
                unfinished(&pool).await
            })
            .await
        }
        .await;
        session.stop().await;
        seeded?;
        // 2. the new version active: live studies on an idle queue
        let new = running(base, model, new_version);
        let session = Session::start_in(&new, &db.url, storage.path(), stable_after, None).await?;
        let timed = async {
            let pool = session.node.index.pool().clone();
            let live = |files: Vec<PathBuf>| {
                let (session, pool) = (&session, pool.clone());
                async move {
                    let sent = session.send(&files, &indicatif::ProgressBar::hidden()).await?;
                    let backlog_queued = reanalysis_jobs(&pool, "queued").await?;
                    let delivered =
                        session.wait_for_results(&sent, Duration::from_secs(120), &indicatif::ProgressBar::hidden()).await?;
                    Ok::<_, anyhow::Error>(LiveRun { total_s: delivered.stages.total_s, backlog_queued })
                }
            };
            live(study(sample)?).await?; // warm-up
            let mut idle = Vec::new();
            for _ in 0..runs {
                idle.push(live(study(sample)?).await?);
            }
            // 3. the re-analysis, as `firstread reanalyse --model NAME` queues it
            let since = chrono::Utc::now() - chrono::Duration::days(1);
            let planned = new.worker.model_runs().map_err(anyhow::Error::msg)?;
            let run = crate::models::reanalysis_run(&planned, &format!("{model}@{new_version}"))
                .map_err(anyhow::Error::msg)?;
            let started = std::time::Instant::now();
            let summary = queue_reanalysis(
                &pool,
                &Reanalysis {
                    model,
                    model_version: new_version,
                    shadow: false,
                    takes: &run.takes,
                    since,
                    site: None,
                    max_attempts: new.worker.max_attempts,
                    dry_run: false,
                },
            )
            .await?;
            // the live studies read by the new version above are skipped: only the stored ones
            if summary.queued() != studies as u64 {
                bail!("re-analysis queued {} study versions, expected {studies}", summary.queued());
            }
            wait_until(&pool, "the first re-analysis jobs", |pool| async move {
                Ok(reanalysis_jobs(&pool, "done").await? < 3)
            })
            .await?;
            let mut busy = Vec::new();
            for _ in 0..runs {
                busy.push(live(study(sample)?).await?);
            }
            wait_until(&pool, "the re-analysis backlog", |pool| async move { unfinished(&pool).await }).await?;
            let backlog_s = started.elapsed().as_secs_f64();
            // 4. exactly one new result per stored study
            let (reanalysed_once, job_median_s): (i64, f64) = sqlx::query_as(
                "WITH r AS (SELECT j.study_instance_uid, count(*) AS n, \
                        bool_and(j.state = 'done' AND j.result->>'status' = 'analysed') AS ok, \
                        bool_and(EXISTS (SELECT 1 FROM jobs e WHERE e.kind = 'export' AND e.state = 'done' \
                            AND e.study_instance_uid = j.study_instance_uid AND e.model_version = j.model_version)) AS sent, \
                        max(EXTRACT(EPOCH FROM j.finished_at - j.started_at)) AS s \
                    FROM jobs j WHERE j.kind = 'analysis' AND j.model_version = $1 AND j.priority = $2 \
                    GROUP BY j.study_instance_uid) \
                 SELECT count(*) FILTER (WHERE n = 1 AND ok AND sent), \
                        coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY s), 0)::float8 FROM r",
            )
            .bind(new_version)
            .bind(REANALYSIS_PRIORITY)
            .fetch_one(&pool)
            .await?;
            Ok::<_, anyhow::Error>((idle, busy, summary.queued(), reanalysed_once as usize, backlog_s, job_median_s))
        }
        .await;
        session.stop().await;
        let (idle, busy, queued, reanalysed_once, backlog_s, job_median_s) = timed?;
        Ok::<_, anyhow::Error>(Backlog {
            model: model.to_owned(),
            old_version: old_version.to_owned(),
            new_version: new_version.to_owned(),
            studies,
            slices,
            stable_after,
            concurrency: base.worker.concurrency,
            idle,
            busy,
            queued,
            reanalysed_once,
            backlog_s,
            job_median_s,
        })
    }
    .await;
    db.drop_database().await;
    measured
}

/// `base` with one active model version and no shadow.
fn running(base: &Config, model: &str, version: &str) -> Config {
    let mut c = base.clone();
    c.worker.models = Some(vec![format!("{model}@{version}")]);
    c.worker.shadow = Vec::new();
    c
}

/// Whether analysis or export jobs are not yet done or dead.
async fn unfinished(pool: &PgPool) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE kind IN ('analysis', 'export') AND state NOT IN ('done', 'dead'))",
    )
    .fetch_one(pool)
    .await?)
}

/// Re-analysis jobs in `state`.
async fn reanalysis_jobs(pool: &PgPool, state: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM jobs WHERE priority = $1 AND state = $2")
        .bind(REANALYSIS_PRIORITY)
        .bind(state)
        .fetch_one(pool)
        .await?)
}

/// Polls `pending` every 100 ms until it is false; 10 minutes at most.
async fn wait_until<F, Fut>(pool: &PgPool, what: &str, pending: F) -> anyhow::Result<()>
where
    F: Fn(PgPool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while pending(pool.clone()).await? {
        if std::time::Instant::now() > deadline {
            bail!("{what}: not finished within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The whole `docs/bench-reanalysis.md`.
pub fn reanalysis_report(b: &Backlog, sample: &Path) -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let totals = |runs: &[LiveRun]| runs.iter().map(|r| r.total_s).collect::<Vec<_>>();
    let (idle, busy) = (totals(&b.idle), totals(&b.busy));
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.2}-{hi:.2}")
    };
    let load = super::load_average();
    let mut out = String::new();
    let _ = writeln!(out, "# Re-analysis benchmark: a live study while a backlog runs\n");
    let _ = writeln!(
        out,
        "Generated by `firstread bench reanalysis` (release build) on {}. Machine: {cores} cores, 1-min load \
         average at the end {load}; PostgreSQL on the same machine; libtorch on CPU. One node, every role in-process, `[worker] concurrency` {} \
         (defaults otherwise, `stable_after` {:.0} s). {} studies of {} slices (made from `{}`, new UIDs each) were stored \
         and read by {} {}; the node restarted with {} active and `firstread reanalyse` queued them \
         (priority {REANALYSIS_PRIORITY}). Timed: last C-STORE-RSP -> SR acknowledged by the receiving AE, as in \
         `docs/bench-time-to-result.md`.\n",
        chrono::Utc::now().format("%Y-%m-%d"),
        b.concurrency,
        b.stable_after.as_secs_f64(),
        b.studies,
        b.slices,
        sample.display(),
        b.model,
        b.old_version,
        b.new_version,
    );
    let _ = writeln!(
        out,
        "| live study | runs | median s | min-max s | re-analysis jobs still queued at its last C-STORE-RSP |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|");
    let _ = writeln!(out, "| idle queue | {} | **{:.2}** | {} | - |", idle.len(), median(&idle), range(&idle));
    let _ = writeln!(
        out,
        "| during the re-analysis of {} studies | {} | **{:.2}** | {} | {} |",
        b.studies,
        busy.len(),
        median(&busy),
        range(&busy),
        b.busy.iter().map(|r| r.backlog_queued.to_string()).collect::<Vec<_>>().join(", "),
    );
    let _ = writeln!(
        out,
        "\nRatio (median during / idle): **{:.2}**. A live study is claimed before every queued re-analysis job, \
         and no re-analysis job starts while a study is arriving (pending assembly): the one running when its \
         first instance arrives has the study's receiving and stability time to finish (median re-analysis job \
         here {:.2} s, claim to done; a longer one still delays the live study by what is left of it).\n",
        median(&busy) / median(&idle),
        b.job_median_s,
    );
    let _ = writeln!(
        out,
        "Re-analysis: {} study versions queued, backlog drained in {:.1} s (live studies included); **{} of {} \
         stored studies have exactly one analysis by {}, analysed, its results exported**.\n",
        b.queued, b.backlog_s, b.reanalysed_once, b.studies, b.new_version,
    );
    let _ = writeln!(
        out,
        "Every run (s): idle {}; during {}.\n",
        idle.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(", "),
        busy.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(", "),
    );
    let _ = writeln!(
        out,
        "Rerun with:\n\n```sh\ncargo build --release -p firstread\n\
         target/release/firstread bench reanalysis --out docs/bench-reanalysis.md\n```"
    );
    out
}
