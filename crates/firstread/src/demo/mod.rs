//! `firstread demo`: the whole path on the bundled real chest CT, in one process.
//!
//! A node ([`Node`], every role) starts with a temporary storage folder and a uniquely named
//! temporary PostgreSQL database ([`TempDatabase`]). A receiving AE ([`Receiver`], AE title
//! [`DEMO_AE_TITLE`]: an in-process Store SCP that keeps what it receives and the time it
//! acknowledged each object) stands in for the modality. The sample is pushed to the node with
//! the C-STORE SCU (PS3.7 9.1.1) as that AE; the node sends the first read back to it (TID 1500
//! SR, volumetric SR, SEG, Secondary Capture key images); the demo prints the findings and the
//! time from the last C-STORE-RSP the SCU received to the C-STORE-RSP the receiving AE gave the
//! SR, split into stages from what the database records ([`Stages`]). The database is dropped and
//! the storage folder removed at the end, also on failure and on Ctrl-C.
//!
//! [`Session`] (node + receiving AE) is also what `firstread bench time-to-result` drives.
//!
//! - [`database`]: the temporary database;
//! - [`receiver`]: the receiving AE (an in-process Store SCP);
//! - [`session`]: node + receiving AE, sending, waiting for the results, the stage split;
//! - [`report`]: the first read as the demo prints it.

mod database;
mod receiver;
mod report;
mod session;

pub use database::*;
pub use receiver::*;
pub use report::*;
pub use session::*;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use firstread_dimse::command::status;
use firstread_dimse::scu::{self, Destination, Instance, Part10Header, ScuConfig, StoreScu};
use firstread_dimse::{InstanceStore, Outcome, PendingInstance, ScpConfig, StoreRequest, StoreScp};
use firstread_findings::{vocabulary, Effusion, ExtentClass, FocalLesion, IndeterminateDense, Pattern};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::config::{redacted_url, Config};
use crate::node::{Node, Roles};

/// AE title of the demo's receiving AE (the "modality" the results go back to).
pub const DEMO_AE_TITLE: &str = "DEMO_CT";

/// Default PostgreSQL server on which the temporary database is created (the `postgres`
/// maintenance database is only used to CREATE and DROP it).
pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The bundled sample series, relative to the repository root.
pub const DEFAULT_SAMPLE: &str = "data/ct/lung-dx-a0002-b40f";

/// Marker file that makes an output folder ours to clear on the next run.
const OUT_MARKER: &str = ".firstread-demo";

/// What `firstread demo` does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Folder of the series to send; its files named `1-*.dcm` are sent (the bundled sample's
    /// instance files; the JPEG-LS folder also holds `dcmtk_*` copies that are left out).
    pub sample: PathBuf,
    /// Where the received objects and `first-read.json` are written.
    pub out: PathBuf,
    /// PostgreSQL URL of a database on the server where the temporary one is created.
    pub postgres: String,
    /// The node's `assembly.stable_after` (wait after a study's last instance).
    pub stable_after: Duration,
    /// Give up when the results have not come back this long after the last C-STORE-RSP.
    pub timeout: Duration,
}

/// Empties (or creates) the output folder; refuses a non-empty folder it did not create.
fn prepare_out(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let entries: Vec<std::fs::DirEntry> =
            std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?.flatten().collect();
        if !entries.is_empty() && !out.join(OUT_MARKER).exists() {
            bail!("{} is not empty and was not written by firstread demo; choose another --out", out.display());
        }
        for e in entries {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                std::fs::remove_file(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join(OUT_MARKER), "written by `firstread demo`; emptied by its next run\n")?;
    Ok(())
}

fn bar_style(bar: &ProgressBar, template: &str) {
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
}

/// Runs the demo: temporary database, node and receiving AE; sends the sample, waits for the
/// first read, writes the received objects and `first-read.json` under `opts.out`, cleans up.
/// Progress bars go to stderr (hidden when it is not a terminal).
///
/// # Errors
/// With a message saying what failed: sample missing, PostgreSQL unreachable, model missing,
/// sending refused, study refused, analysis or export dead, timeout, Ctrl-C.
pub async fn run(opts: &DemoOptions, base: &Config) -> anyhow::Result<DemoReport> {
    let files = sample_files(&opts.sample).context("run the demo from the repository root, or pass --sample")?;
    prepare_out(&opts.out)?;
    let db = TempDatabase::create(&opts.postgres).await.with_context(|| {
        format!(
            "creating a temporary database on {} (is PostgreSQL running? scripts/bootstrap.sh sets one up; \
             --postgres chooses another server)",
            redacted_url(&opts.postgres)
        )
    })?;
    let outcome = tokio::select! {
        r = run_session(opts, base, &db, &files) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted (Ctrl-C); the temporary database and folder are removed")),
    };
    db.drop_database().await;
    outcome
}

async fn run_session(
    opts: &DemoOptions,
    base: &Config,
    db: &TempDatabase,
    files: &[PathBuf],
) -> anyhow::Result<DemoReport> {
    let starting = ProgressBar::new_spinner();
    bar_style(&starting, "{spinner} {msg}");
    starting.set_message("starting the node (loading the model) and the receiving AE");
    starting.enable_steady_tick(Duration::from_millis(100));
    let session = Session::start(base, &db.url, opts.stable_after, Some(opts.out.clone())).await;
    starting.finish_and_clear();
    let session = session?;
    let outcome = async {
        let bar = ProgressBar::new(files.len() as u64);
        bar_style(&bar, "sending the CT to FIRSTREAD  {wide_bar} {pos}/{len} slices {elapsed}");
        let sent = session.send(files, &bar).await;
        bar.finish_and_clear();
        let sent = sent?;
        let spinner = ProgressBar::new_spinner();
        bar_style(&spinner, "{spinner} {elapsed} {msg}");
        spinner.enable_steady_tick(Duration::from_millis(100));
        let delivered = session.wait_for_results(&sent, opts.timeout, &spinner).await;
        spinner.finish_and_clear();
        Ok::<_, anyhow::Error>((sent, delivered?))
    }
    .await;
    session.stop().await;
    let (sent, delivered) = outcome?;

    let result_json = opts.out.join("first-read.json");
    std::fs::write(&result_json, serde_json::to_string_pretty(&delivered.result)?)
        .with_context(|| format!("writing {}", result_json.display()))?;
    let first_read: FirstRead = serde_json::from_value(delivered.result["findings"].clone()).with_context(|| {
        // a package described by its vocabulary alone (emphysema-ct) has no COVID-19 findings
        format!(
            "the demo prints the COVID-19 first read of {}, and the result it got (model {}) has none; that \
             result is in {}; run the demo with {} among [worker] models to see the first read",
            session::DEMO_MODEL,
            delivered.result["model"]["name"].as_str().unwrap_or("?"),
            result_json.display(),
            session::DEMO_MODEL,
        )
    })?;
    Ok(DemoReport {
        study_instance_uid: sent.study_instance_uid.clone(),
        study_version: delivered.study_version,
        model: delivered.result["model"].clone(),
        extent_class_label: extent_label(&first_read.extent_class),
        pattern_label: pattern_label(&first_read.pattern),
        first_read,
        severity_score_max: SEVERITY_SCORE_MAX,
        units: units(),
        instances_sent: sent.instances,
        send_s: sent.duration.as_secs_f64(),
        stable_after_s: opts.stable_after.as_secs_f64(),
        time_to_result_s: delivered.stages.total_s,
        stages: delivered.stages,
        received: delivered.objects,
        received_by: DEMO_AE_TITLE.into(),
        output_folder: opts.out.clone(),
        result_json,
        database: db.name.clone(),
    })
}
