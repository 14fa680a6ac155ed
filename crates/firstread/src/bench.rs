//! Benchmarks that write Markdown tables (not tests: figures depend on the machine; run them on
//! an idle one, release build):
//!
//! - `firstread bench analysis`: the analysis stages (volume assembly, model, pleural cavity, measurements) on the
//!   bundled sample and on a 300-slice study made from it.
//! - `firstread bench time-to-result`: last C-STORE-RSP -> SR acknowledged by the receiving AE
//!   on a warm in-process node ([`crate::demo::Session`]), split into stages ([`Stages`]).
//! - `firstread bench stow-memory`: the peak RSS of a node receiving one STOW-RS request of a
//!   single huge instance ([`stow_memory`]).
//! - `firstread bench reanalysis`: a live study's time to result while a re-analysis backlog of
//!   stored studies runs ([`reanalysis`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::open_file;
use firstread_inference::Model;

use crate::analysis::Analysis;
use crate::config::Config;
use crate::demo::{Session, Stages, TempDatabase};

pub mod reanalysis;

/// The 1-minute load average from /proc/loadavg ("?" where there is none), for the reports.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Peak resident set size of this process so far (MiB), from /proc/self/status (VmHWM).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Writes a `slices`-slice series made from `sample` (sorted by z): each new slice is linearly
/// interpolated in z between its two nearest source slices, with new Study/Series/SOP Instance
/// UIDs (2.25 UUID-derived) and Image Position (Patient) / Slice Thickness updated. Returns the files.
///
/// # Errors
/// Unreadable sample files or unwritable `out`.
pub fn resampled_series(sample: &[PathBuf], slices: usize, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut src: Vec<(f64, dicom_object::DefaultDicomObject)> = Vec::new();
    for p in sample {
        let obj = open_file(p).with_context(|| format!("reading {}", p.display()))?;
        let z = obj.element(tags::IMAGE_POSITION_PATIENT)?.to_multi_float64()?.get(2).copied().unwrap_or(0.0);
        src.push((z, obj));
    }
    src.sort_by(|a, b| a.0.total_cmp(&b.0));
    anyhow::ensure!(src.len() >= 2, "need at least two sample slices");
    let (z0, z1) = (src[0].0, src[src.len() - 1].0);
    let step = (z1 - z0) / (slices - 1) as f64;
    let new_uid = || format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
    let (study, series) = (new_uid(), new_uid());
    let pixels: Vec<Vec<u16>> = src
        .iter()
        .map(|(_, o)| -> anyhow::Result<Vec<u16>> {
            let bytes = o.element(tags::PIXEL_DATA)?.to_bytes()?;
            Ok(bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
        })
        .collect::<anyhow::Result<_>>()?;
    std::fs::create_dir_all(out)?;
    let mut files = Vec::with_capacity(slices);
    for n in 0..slices {
        let z = z0 + step * n as f64;
        let hi = src.iter().position(|(sz, _)| *sz >= z - 1e-6).unwrap_or(src.len() - 1).max(1);
        let lo = hi - 1;
        let t = ((z - src[lo].0) / (src[hi].0 - src[lo].0)).clamp(0.0, 1.0);
        let data: Vec<u8> = pixels[lo]
            .iter()
            .zip(&pixels[hi])
            .flat_map(|(&a, &b)| ((f64::from(a) * (1.0 - t) + f64::from(b) * t).round() as u16).to_le_bytes())
            .collect();
        let mut obj = src[lo].1.clone();
        let sop = new_uid();
        let position = obj.element(tags::IMAGE_POSITION_PATIENT)?.to_multi_float64()?;
        obj.put(DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(study.as_str())));
        obj.put(DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from(series.as_str())));
        obj.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop.as_str())));
        obj.put(DataElement::new(tags::INSTANCE_NUMBER, VR::IS, PrimitiveValue::from((n + 1).to_string())));
        obj.put(DataElement::new(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            PrimitiveValue::from(format!("{:.3}\\{:.3}\\{:.3}", position[0], position[1], z)),
        ));
        obj.put(DataElement::new(tags::SLICE_THICKNESS, VR::DS, PrimitiveValue::from(format!("{step:.3}"))));
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(data)));
        obj.meta_mut().media_storage_sop_instance_uid = sop.clone();
        // (0002,0000) must follow the new UID's length, or readers take data set elements for
        // File Meta Information
        obj.meta_mut().update_information_group_length();
        let path = out.join(format!("{:04}.dcm", n + 1));
        obj.write_to_file(&path).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
    }
    Ok(files)
}

/// An in-process webhook receiver for the benchmark: checks each delivery's HMAC and records
/// when the notification of each study arrived (this process's wall clock, like the SCU's).
pub struct WebhookClock {
    addr: std::net::SocketAddr,
    arrivals: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, chrono::DateTime<chrono::Utc>>>>,
    /// The receiver's task: stopped when the clock is dropped.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookClock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const BENCH_WEBHOOK_SECRET: &str = "bench-secret";

impl WebhookClock {
    /// Listens on 127.0.0.1 (any port).
    ///
    /// # Errors
    /// No free port.
    pub async fn start() -> anyhow::Result<WebhookClock> {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let arrivals: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<_, _>>> = Default::default();
        let seen = arrivals.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let seen = seen.clone();
                async move {
                    let at = chrono::Utc::now();
                    let expected = firstread_notify::webhook::signature(BENCH_WEBHOOK_SECRET.as_bytes(), &body);
                    let given = headers.get("X-Firstread-Signature").and_then(|v| v.to_str().ok()).unwrap_or("");
                    if given != expected {
                        return StatusCode::UNAUTHORIZED;
                    }
                    let study = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["study"]["study_instance_uid"].as_str().map(str::to_owned));
                    if let (Some(study), Ok(mut map)) = (study, seen.lock()) {
                        map.entry(study).or_insert(at);
                    }
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(WebhookClock { addr, arrivals, task })
    }

    /// A webhook channel to this receiver and a rule that sends it every read.
    ///
    /// # Errors
    /// None in practice (the TOML is ours); kept as an error rather than a panic.
    pub fn notify_config(&self) -> anyhow::Result<firstread_notify::NotifyConfig> {
        let toml_text = format!(
            "[[channels]]\nname = \"bench\"\nkind = \"webhook\"\nurl = \"http://{}/hook\"\nsecret = \"{BENCH_WEBHOOK_SECRET}\"\n\n\
             [[rules]]\nname = \"every-read\"\nchannels = [\"bench\"]\n",
            self.addr
        );
        Ok(toml::from_str(&toml_text)?)
    }

    /// When the notification of `study` arrived, waiting up to `timeout`.
    pub async fn wait_for(&self, study: &str, timeout: Duration) -> Option<chrono::DateTime<chrono::Utc>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(at) = self.arrivals.lock().ok().and_then(|m| m.get(study).copied()) {
                return Some(at);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Runs the analysis benchmark with the model package in `package` (its version folder) on
/// `device` and returns the Markdown report.
///
/// # Errors
/// Model, device or sample unavailable.
pub fn analysis(
    package: &Path,
    device: firstread_inference::DeviceChoice,
    sample: &[PathBuf],
    repeats: usize,
) -> anyhow::Result<String> {
    let model = Mutex::new(Model::load_on(package, device)?);
    let tmp = tempfile::tempdir()?;
    let big = resampled_series(sample, 300, tmp.path())?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| case | slices | volume s | model s (denoising + TorchScript) | pleural cavity s | measurements s | total s | peak RSS MiB |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, files) in
        [("sample (30 x 512 x 512, 8 mm)", sample), ("300 x 512 x 512 (made from the sample, 0.78 mm)", &big[..])]
    {
        let mut runs = Vec::new();
        for _ in 0..repeats.max(1) {
            let started = Instant::now();
            let outcome = Analysis::analyse_files(&model, files, 0).map_err(|e| anyhow::anyhow!(e))?;
            anyhow::ensure!(outcome.result["status"] == "analysed", "{name}: {}", outcome.result);
            let t = &outcome.result["timings_ms"];
            let get = |k: &str| t[k].as_f64().unwrap_or(f64::NAN) / 1000.0;
            runs.push([
                get("volume"),
                get("model"),
                get("pleural_cavity"),
                get("measurements"),
                started.elapsed().as_secs_f64(),
            ]);
        }
        runs.sort_by(|a, b| a[4].total_cmp(&b[4]));
        let m = runs[runs.len() / 2];
        let _ = writeln!(
            out,
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            files.len(),
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            peak_rss_mib().unwrap_or(f64::NAN)
        );
    }
    Ok(out)
}

/// When a timed study of [`time_to_result`] was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Once the node had no queued or running job ([`Session::wait_idle`]): the previous
    /// study's every read (both models) and delivery finished, as a study arriving at a normal
    /// pace finds the node.
    Idle,
    /// As soon as the previous study's SR was acknowledged: its other jobs (the second model's
    /// read, the notifications) may still be queued or running, and the new study's analysis
    /// waits for the one worker ("queue pick-up").
    BackToBack,
}

impl Pace {
    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Pace::Idle => "node idle",
            Pace::BackToBack => "back-to-back",
        }
    }
}

/// One time-to-result run: the stage split of last C-STORE-RSP -> SR acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct TimeToResultRun {
    /// Slices sent.
    pub slices: usize,
    /// When it was sent.
    pub pace: Pace,
    /// Last C-STORE-RSP -> the webhook notification received (its HMAC checked), s.
    pub webhook_s: Option<f64>,
    /// Seconds from the association request to the last C-STORE-RSP (not part of the total).
    pub send_s: f64,
    /// The split.
    pub stages: Stages,
}

/// Time to result on a warm node: for each slice count in `cases`, a node and a receiving AE
/// ([`Session`]) on a temporary database; `1 + 2 * runs` studies made from `sample` with
/// [`resampled_series`] (new UIDs each run; 30 slices from the 30-slice sample reproduces its
/// pixels), each pushed with the C-STORE SCU and timed from the last C-STORE-RSP to the SR
/// acknowledged by the receiving AE. The first runs of each case warm the node up and are left
/// out (`early_ready_trust_after` of them, at least one: after them the sender is known to send
/// whole studies); then `runs` studies each sent once the node is idle ([`Pace::Idle`]), then `runs` each
/// sent as soon as the previous SR was acknowledged ([`Pace::BackToBack`]). Returns the runs per
/// case.
///
/// # Errors
/// PostgreSQL unreachable, model missing, a study not analysed or not delivered.
pub async fn time_to_result(
    base: &Config,
    postgres: &str,
    sample: &[PathBuf],
    cases: &[usize],
    runs: usize,
    stable_after: Duration,
) -> anyhow::Result<Vec<(usize, Vec<TimeToResultRun>)>> {
    let hook = WebhookClock::start().await?;
    let mut base = base.clone();
    base.notify = hook.notify_config()?;
    let mut out = Vec::new();
    for &slices in cases {
        let db = TempDatabase::create(postgres).await?;
        let measured = time_to_result_case(&base, &db.url, sample, slices, runs, stable_after, &hook).await;
        db.drop_database().await;
        out.push((slices, measured?));
    }
    Ok(out)
}

async fn time_to_result_case(
    base: &Config,
    database_url: &str,
    sample: &[PathBuf],
    slices: usize,
    runs: usize,
    stable_after: Duration,
    hook: &WebhookClock,
) -> anyhow::Result<Vec<TimeToResultRun>> {
    let session = Session::start(base, database_url, stable_after, None).await?;
    // the warm-up also makes the sender known to send whole studies (early readiness without the
    // grace from then on): as many studies as that takes, at least one
    let trust = crate::config::AssemblyConfig::default().early_ready_trust_after;
    let warm_up = usize::try_from(trust).unwrap_or(usize::MAX).max(1);
    let measured = async {
        let tmp = tempfile::tempdir()?;
        let mut measured = Vec::new();
        for run in 0..warm_up + 2 * runs {
            // the warm-up; then `runs` from an idle node, then `runs` back-to-back
            let counted = run >= warm_up;
            let pace = if !counted || run >= warm_up + runs { Pace::BackToBack } else { Pace::Idle };
            if pace == Pace::Idle {
                session.wait_idle(Duration::from_secs(600)).await?;
            }
            let dir = tmp.path().join(run.to_string());
            let sample = sample.to_vec();
            let files = {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || resampled_series(&sample, slices, &dir)).await??
            };
            let hidden = indicatif::ProgressBar::hidden();
            let sent = session.send(&files, &hidden).await?;
            let delivered = session.wait_for_results(&sent, Duration::from_secs(600), &hidden).await?;
            let s = delivered.stages;
            let webhook_s = hook
                .wait_for(&sent.study_instance_uid, Duration::from_secs(60))
                .await
                .map(|at| (at - sent.last_response_at).num_microseconds().unwrap_or(0) as f64 / 1e6);
            eprintln!(
                "{slices} slices, run {run}{}: sent in {:.2} s; last C-STORE-RSP -> SR acknowledged {:.2} s ({}); \
                 -> webhook received {}",
                if counted { format!(" ({})", pace.label()) } else { " (warm-up, not counted)".to_owned() },
                sent.duration.as_secs_f64(),
                s.total_s,
                s.named().iter().map(|(n, v)| format!("{n} {v:.2}")).collect::<Vec<_>>().join(", "),
                webhook_s.map_or("never".into(), |w| format!("{w:.2} s")),
            );
            if counted {
                measured.push(TimeToResultRun {
                    slices,
                    pace,
                    webhook_s,
                    send_s: sent.duration.as_secs_f64(),
                    stages: s,
                });
            }
            std::fs::remove_dir_all(&dir)?;
        }
        Ok::<_, anyhow::Error>(measured)
    }
    .await;
    session.stop().await;
    measured
}

/// The runs of `runs` sent at `pace`.
fn paced(runs: &[TimeToResultRun], pace: Pace) -> Vec<TimeToResultRun> {
    runs.iter().copied().filter(|r| r.pace == pace).collect()
}

/// The Markdown table of [`time_to_result`]: per case and [`Pace`] (node idle first) the run
/// with the median total, split into stages, then min and max of the totals.
pub fn time_to_result_table(cases: &[(usize, Vec<TimeToResultRun>)]) -> String {
    let mut out = String::new();
    let names = Stages::default().named().map(|(n, _)| n);
    let _ = writeln!(
        out,
        "| study | sent | runs | {} | **last C-STORE-RSP -> SR acknowledged s** | min-max s | **last C-STORE-RSP -> webhook received s** (median) | send s |",
        names.iter().map(|n| format!("{n} s")).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(out, "|---|---|---:|{}---:|---:|---:|---:|", "---:|".repeat(names.len()));
    let rows = cases
        .iter()
        .flat_map(|(slices, runs)| [Pace::Idle, Pace::BackToBack].map(|pace| (*slices, pace, paced(runs, pace))));
    for (slices, pace, runs) in rows {
        let mut sorted = runs.clone();
        sorted.sort_by(|a, b| a.stages.total_s.total_cmp(&b.stages.total_s));
        let Some(median) = sorted.get(sorted.len() / 2) else { continue };
        let (min, max) = (sorted[0].stages.total_s, sorted[sorted.len() - 1].stages.total_s);
        let study = if slices == 30 {
            "sample, 30 x 512 x 512 (8 mm)".to_owned()
        } else {
            format!("{slices} x 512 x 512 made from the sample")
        };
        let mut hooks: Vec<f64> = runs.iter().filter_map(|r| r.webhook_s).collect();
        hooks.sort_by(f64::total_cmp);
        let hook = match hooks.get(hooks.len() / 2) {
            Some(h) if hooks.len() == runs.len() => format!("**{h:.2}**"),
            Some(h) => format!("**{h:.2}** ({} of {} received)", hooks.len(), runs.len()),
            None => "not received".into(),
        };
        let _ = writeln!(
            out,
            "| {study} | {} | {} | {} | **{:.2}** | {min:.2}-{max:.2} | {hook} | {:.2} |",
            pace.label(),
            runs.len(),
            median.stages.named().iter().map(|(_, v)| format!("{v:.2}")).collect::<Vec<_>>().join(" | "),
            median.stages.total_s,
            median.send_s,
        );
    }
    out
}

/// The whole `docs/bench-time-to-result.md`: set-up, the table, and the target check for the
/// largest study (under `stable_after` + 2 s).
pub fn time_to_result_report(cases: &[(usize, Vec<TimeToResultRun>)], stable_after: Duration) -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let load = load_average();
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into());
    let stable = stable_after.as_secs_f64();
    // the session's node runs the default assembly settings but for stable_after
    let assembly = crate::config::AssemblyConfig::default();
    let early = if assembly.early_ready { "on" } else { "off" };
    let (grace, tick) = (assembly.early_ready_grace.as_millis(), assembly.tick.as_millis());
    let trust = assembly.early_ready_trust_after;
    let warm_up = trust.max(1);
    let mut out = String::new();
    let _ = writeln!(out, "# Time-to-result benchmark\n");
    let _ = writeln!(
        out,
        "Generated by `firstread bench time-to-result` (release build) on {}, repository HEAD `{head}`. \
         Machine: {cores} cores, 1-min load average at the end: {load}; PostgreSQL on the same machine; \
         libtorch on CPU.\n",
        chrono::Utc::now().format("%Y-%m-%d"),
    );
    let _ = writeln!(
        out,
        "What is timed: from the **last C-STORE-RSP** the sending SCU receives to the **C-STORE-RSP of the SR** \
         given by the receiving AE (an in-process Store SCP, as in `firstread demo`). One `firstread` node \
         (every role, in-process, defaults otherwise: fsync on, `early_ready` {early} (grace {grace} ms, not \
         waited for a sender whose last {trust} studies each came over one association), assembly tick {tick} ms \
         and woken when an association ends, one analysis worker woken by NOTIFY) with `stable_after` = \
         {stable} s; each run sends a new study (new UIDs, made from the sample with `resampled_series`) over \
         one association; the first {warm_up} runs per case (a new database each) warm the node up and make the \
         sender known to send whole studies, and are not counted: a new sender's first {trust} studies wait \
         the grace ({grace} ms) more. The stage split is that of the run with the median total; the stages \
         add up to it.\n\n\
         Every active model package reads each study (covid19-lung-ct, whose SR is timed, and \
         emphysema-ct), one job at a time on the one worker. **sent**: *node idle*, each study sent once \
         the node had no queued or running job (the previous study's reads of both models and its \
         deliveries finished): what a study arriving at a normal pace finds, and what the targets are \
         checked on; *back-to-back*, each study sent as soon as the previous study's SR was acknowledged \
         (the runs after the idle ones): the previous study's second read (emphysema-ct) may still be \
         running when the new study is ready, and shows as queue pick-up.\n"
    );
    let _ = writeln!(out, "{}", time_to_result_table(cases));
    let _ = writeln!(
        out,
        "Stages (from the database, the SCU and the receiving AE, one clock):\n\n\
         - **stability wait**: last C-STORE-RSP -> the study ready: its stability deadline (its last CT \
           instance's index time, `instances.received_at`, the transaction that set `studies.stable_at`, + \
           `stable_after`) or, made ready early (association released, the grace passed or the sender known \
           to send whole studies, every candidate series contiguous), the analysis job's creation \
           (`jobs.created_at`) when that came first.\n\
         - **queue pick-up**: study ready -> analysis job claimed (`jobs.started_at`): NOTIFY, claim.\n\
         - **volume**, **model** (denoising + TorchScript), **pleural cavity**, **measurements**: the analysis job's `result.timings_ms`.\n\
         - **reporting**: the rest of the analysis job until the export job of its SR is queued \
           (`jobs.created_at`): instance lookup, the SR built, written with fsync and indexed (the volumetric \
           SR, SEG and key images are built after it, while the SR is sent, and exported as a second part).\n\
         - **export**: SR export job queued -> SR acknowledged: claim, association, C-STORE of the SR.\n"
    );
    // issue 16's targets: 2.0 s for 300 x 512 x 512, 0.8 s for the 30-slice sample (medians)
    for (slices, runs) in cases {
        let target = match slices {
            30 => 0.8,
            300 => 2.0,
            _ => continue,
        };
        let mut totals: Vec<f64> = paced(runs, Pace::Idle).iter().map(|r| r.stages.total_s).collect();
        totals.sort_by(f64::total_cmp);
        if let Some(median) = totals.get(totals.len() / 2) {
            let verdict = if *median <= target { "met" } else { "**not met**" };
            let _ = writeln!(
                out,
                "Target: at most {target:.1} s for {slices} slices on 2 cores (median, node idle): {median:.2} s, \
                 {verdict}.\n"
            );
        }
    }
    let _ = writeln!(out, "Every run (last C-STORE-RSP -> SR acknowledged, s):\n");
    for (slices, runs) in cases {
        for pace in [Pace::Idle, Pace::BackToBack] {
            let list: Vec<String> = paced(runs, pace).iter().map(|r| format!("{:.2}", r.stages.total_s)).collect();
            if !list.is_empty() {
                let _ = writeln!(out, "- {slices} slices, {}: {}", pace.label(), list.join(", "));
            }
        }
    }
    let _ = writeln!(
        out,
        "\nRerun with:\n\n```sh\ncargo build --release -p firstread\n\
         target/release/firstread bench time-to-result --stable-after {}s --out docs/bench-time-to-result.md\n```",
        stable_after.as_secs_f64()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/ct/lung-dx-a0002-b40f");
        crate::demo::sample_files(&dir).expect("sample")
    }

    fn text(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> String {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).into())
            .unwrap_or_default()
    }

    /// A 300-slice run whose total is `total_s`, of which `pickup_s` queue pick-up.
    fn timed(pace: Pace, pickup_s: f64, total_s: f64) -> TimeToResultRun {
        let stages = Stages { queue_pickup_s: pickup_s, model_s: total_s - pickup_s, total_s, ..Stages::default() };
        TimeToResultRun { slices: 300, pace, webhook_s: Some(total_s + 0.02), send_s: 1.25, stages }
    }

    #[test]
    fn time_to_result_reports_idle_and_back_to_back_apart_and_checks_the_target_on_idle() {
        let runs = vec![
            timed(Pace::Idle, 0.02, 1.90),
            timed(Pace::Idle, 0.01, 1.70),
            timed(Pace::Idle, 0.03, 1.80),
            timed(Pace::BackToBack, 1.80, 3.50),
            timed(Pace::BackToBack, 1.90, 3.60),
            timed(Pace::BackToBack, 1.70, 3.40),
        ];
        let report = time_to_result_report(&[(300, runs)], Duration::from_secs(5));
        // one row per pace, each the median run of its own runs: idle 1.80 s (pick-up 0.03 s),
        // back-to-back 3.50 s (pick-up 1.80 s)
        assert!(
            report.contains(
                "| 300 x 512 x 512 made from the sample | node idle | 3 | 0.00 | 0.03 | 0.00 | 1.77 | 0.00 | 0.00 | \
                 0.00 | 0.00 | **1.80** | 1.70-1.90 | **1.82** | 1.25 |"
            ),
            "{report}"
        );
        assert!(
            report.contains(
                "| 300 x 512 x 512 made from the sample | back-to-back | 3 | 0.00 | 1.80 | 0.00 | 1.70 | 0.00 | 0.00 | \
                 0.00 | 0.00 | **3.50** | 3.40-3.60 | **3.52** | 1.25 |"
            ),
            "{report}"
        );
        // the target is judged on the idle runs only (the back-to-back median would miss it)
        assert!(
            report.contains("Target: at most 2.0 s for 300 slices on 2 cores (median, node idle): 1.80 s, met."),
            "{report}"
        );
        assert!(report.contains("- 300 slices, node idle: 1.90, 1.70, 1.80\n"), "{report}");
        assert!(report.contains("- 300 slices, back-to-back: 3.50, 3.60, 3.40\n"), "{report}");
        assert!(report.contains("bench time-to-result --stable-after 5s --out"), "{report}");
    }

    #[test]
    fn resampled_series_keeps_the_data_set_whole_under_new_uids() {
        let sample = sample();
        let tmp = tempfile::tempdir().expect("dir");
        // 30 slices over the sample's 30: the same positions, so the same pixels
        let files = resampled_series(&sample, 30, tmp.path()).expect("resampled");
        assert_eq!(files.len(), 30);
        let mut sources: Vec<(f64, dicom_object::DefaultDicomObject)> = sample
            .iter()
            .map(|p| {
                let o = open_file(p).expect("source");
                let z = o.element(tags::IMAGE_POSITION_PATIENT).expect("ipp").to_multi_float64().expect("ds")[2];
                (z, o)
            })
            .collect();
        sources.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut studies = std::collections::BTreeSet::new();
        for (file, (_, source)) in files.iter().zip(&sources) {
            let header = firstread_dimse::scu::read_part10_header(file).expect("header");
            let obj = open_file(file).expect("written file");
            assert_eq!(header.sop_instance_uid, text(&obj, tags::SOP_INSTANCE_UID), "meta and data set agree");
            assert_ne!(text(&obj, tags::SOP_INSTANCE_UID), text(source, tags::SOP_INSTANCE_UID), "new UID");
            // the elements right after the File Meta Information survive the shorter UID
            assert_eq!(text(&obj, tags::IMAGE_TYPE), text(source, tags::IMAGE_TYPE));
            assert_eq!(text(&obj, tags::SPECIFIC_CHARACTER_SET), text(source, tags::SPECIFIC_CHARACTER_SET));
            let pixels = |o: &dicom_object::DefaultDicomObject| {
                o.element(tags::PIXEL_DATA).expect("px").to_bytes().expect("bytes").to_vec()
            };
            assert!(pixels(&obj) == pixels(source), "same pixels at the same position");
            studies.insert(text(&obj, tags::STUDY_INSTANCE_UID));
        }
        assert_eq!(studies.len(), 1, "one new study");
        assert!(!studies.contains(&text(&sources[0].1, tags::STUDY_INSTANCE_UID)));
    }

    #[test]
    fn resampled_series_spaces_slices_evenly() {
        let sample = sample();
        let tmp = tempfile::tempdir().expect("dir");
        let files = resampled_series(&sample, 5, tmp.path()).expect("resampled");
        let z: Vec<f64> = files
            .iter()
            .map(|f| {
                open_file(f)
                    .expect("file")
                    .element(tags::IMAGE_POSITION_PATIENT)
                    .expect("ipp")
                    .to_multi_float64()
                    .expect("ds")[2]
            })
            .collect();
        let step = (z[4] - z[0]) / 4.0;
        assert!((step - 58.0).abs() < 1e-3, "z 80..312 mm in 4 steps: {z:?}");
        for w in z.windows(2) {
            assert!((w[1] - w[0] - step).abs() < 2e-3, "{z:?}");
        }
    }
}

/// One timed worklist request of [`triage`].
#[derive(Debug, Clone)]
pub struct TriageTiming {
    /// What was asked.
    pub request: &'static str,
    /// Rows on the page.
    pub rows: usize,
    /// Rows matching.
    pub total: i64,
    /// Median, min and max over the runs, ms.
    pub median_ms: f64,
    /// Fastest run, ms.
    pub min_ms: f64,
    /// Slowest run, ms.
    pub max_ms: f64,
}

/// The triage worklist on `studies` synthetic studies (a temporary database on `postgres`): each
/// with one analysed study version (findings with a class, score and involvement spread over
/// the bands) and the read of a second package described by its vocabulary (an emphysema class:
/// 1 in 7 abnormal, 1 in 13 of the others possibly), 1 in 10 with a second version, 1 in 20
/// refused, 1 in 50 with feedback, over 12 sending sites. Times [`firstread_pages::worklist::page`] `runs` times per request.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn triage(postgres: &str, studies: i64, runs: usize) -> anyhow::Result<Vec<TriageTiming>> {
    let db = TempDatabase::create(postgres).await?;
    let measured = async {
        let index = firstread_store::Index::connect(&db.url, 2).await?;
        index.migrate().await?;
        let pool = index.pool();
        sqlx::query(
            "INSERT INTO studies (site, study_instance_uid, patient_id, patient_name, accession_number, calling_ae_title, \
                 called_ae_title, peer_address, analysable, version, queued_version, last_image_at, stable_at) \
             SELECT 'site-' || (n % 12), '2.25.' || n, 'P' || n, 'Patient^' || n, 'A' || n, 'CT_SITE_' || (n % 12), 'FIRSTREAD', \
                 '10.0.0.' || (n % 12), true, CASE WHEN n % 10 = 0 THEN 2 ELSE 1 END, \
                 CASE WHEN n % 10 = 0 THEN 2 ELSE 1 END, now() - make_interval(secs => n * 60), now() - make_interval(secs => n * 60) \
             FROM generate_series(1, $1) AS n",
        )
        .bind(studies)
        .execute(pool)
        .await?;
        sqlx::query(
            "INSERT INTO jobs (kind, site, study_instance_uid, study_version, model, model_version, payload, max_attempts, \
                 state, attempts, finished_at, result) \
             SELECT 'analysis', s.site, s.study_instance_uid, v, 'covid19-lung-ct', '0.2.0', '{}', 5, 'done', 1, \
                 s.last_image_at + interval '4 s', \
                 CASE WHEN n % 20 = 0 THEN jsonb_build_object('status', 'refused', 'reason', 'no axial CT series') \
                 ELSE jsonb_build_object('status', 'analysed', 'model', jsonb_build_object('version', '0.2.0'), \
                     'volume', jsonb_build_object('series_instance_uid', s.study_instance_uid || '.1'), \
                     'result_files', jsonb_build_array('results/x/03-sc.dcm'), \
                     'findings', jsonb_build_object( \
                         'extent_class', (ARRAY['none_or_minimal','moderate','extensive','severe','critical'])[1 + n % 5], \
                         'severity_score', n % 31, 'total', jsonb_build_object('involvement_pct', (n % 100)::float8))) END \
             FROM (SELECT site, study_instance_uid, last_image_at, substr(study_instance_uid, 6)::bigint AS n, version \
                   FROM studies) s \
             CROSS JOIN LATERAL generate_series(1, s.version) AS v",
        )
        .execute(pool)
        .await?;
        // the second package's read of every study version (a package described by its vocabulary):
        // 1 in 7 emphysema (abnormal), 1 in 13 otherwise "none, possibly emphysema", the rest none
        sqlx::query(
            "INSERT INTO jobs (kind, site, study_instance_uid, study_version, model, model_version, payload, max_attempts, \
                 state, attempts, finished_at, result) \
             SELECT 'analysis', s.site, s.study_instance_uid, v, 'emphysema-ct', '0.1.0', '{}', 5, 'done', 1, \
                 s.last_image_at + interval '5 s', \
                 CASE WHEN n % 20 = 0 THEN jsonb_build_object('status', 'refused', 'reason', 'no axial CT series') \
                 ELSE jsonb_build_object('status', 'analysed', 'model', jsonb_build_object('version', '0.1.0'), \
                     'measurements', jsonb_build_array(jsonb_build_object('key', 'laa_950', 'region', 'both_lungs', \
                         'kind', 'percent_at_or_below', 'zone', null, 'value', e.laa, 'unit', '%', 'unit_symbol', '%')), \
                     'classifications', jsonb_build_array(jsonb_build_object('key', 'emphysema', \
                         'label', 'Emphysema by quantitative CT', 'measurement', 'laa_950', 'region', 'both_lungs', \
                         'value', e.laa, \
                         'class', CASE WHEN e.laa >= 5 THEN jsonb_build_object('value', 'emphysema', \
                                 'label', 'emphysema by LAA-950 (>= 5 %)', 'abnormal', true) \
                             ELSE jsonb_build_object('value', 'none', 'label', 'no emphysema by LAA-950 (< 5 %)', \
                                 'abnormal', false) END, \
                         'possible', CASE WHEN e.laa >= 4 AND e.laa < 5 THEN jsonb_build_array(jsonb_build_object( \
                                 'value', 'emphysema', 'label', 'emphysema by LAA-950 (>= 5 %)', 'abnormal', true)) \
                             ELSE '[]'::jsonb END))) END \
             FROM (SELECT site, study_instance_uid, last_image_at, substr(study_instance_uid, 6)::bigint AS n, version \
                   FROM studies) s \
             CROSS JOIN LATERAL (SELECT CASE WHEN s.n % 7 = 0 THEN 12.0 WHEN s.n % 13 = 0 THEN 4.5 \
                                        ELSE (s.n % 30) / 10.0 END::float8 AS laa) e \
             CROSS JOIN LATERAL generate_series(1, s.version) AS v",
        )
        .execute(pool)
        .await?;
        sqlx::query(
            "INSERT INTO feedback (site, study_instance_uid, study_version, model, model_version, verdict, author) \
             SELECT site, study_instance_uid, 1, 'covid19-lung-ct', '0.2.0', 'agree', 'Dr Bench' FROM studies \
             WHERE substr(study_instance_uid, 6)::bigint % 50 = 0",
        )
        .execute(pool)
        .await?;
        sqlx::query("ANALYZE").execute(pool).await?;
        let every = firstread_sites::Scope::Every;
        let one_site = firstread_sites::Scope::Only(vec!["site-3".into()]);
        let requests: [(&'static str, firstread_pages::worklist::Filter, &firstread_sites::Scope); 5] = [
            ("first page (100 rows), no filter", Default::default(), &every),
            (
                "page 50 (offset 4900)",
                firstread_pages::worklist::Filter { offset: Some(4900), ..Default::default() },
                &every,
            ),
            ("one site", firstread_pages::worklist::Filter { site: Some("site-3".into()), ..Default::default() }, &every),
            ("a user of one site (their sites only)", Default::default(), &one_site),
            (
                "class critical, status done",
                firstread_pages::worklist::Filter {
                    class: Some("critical".into()),
                    status: Some("done".into()),
                    ..Default::default()
                },
                &every,
            ),
        ];
        let mut out = Vec::new();
        for (request, filter, scope) in requests {
            let mut times = Vec::with_capacity(runs);
            let mut last = None;
            for _ in 0..runs.max(1) {
                let started = std::time::Instant::now();
                let page = firstread_pages::worklist::page(pool, &filter, scope).await?;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                last = Some(page);
            }
            times.sort_by(f64::total_cmp);
            let page = last.ok_or_else(|| anyhow::anyhow!("no run"))?;
            out.push(TriageTiming {
                request,
                rows: page.rows.len(),
                total: page.total,
                median_ms: times[times.len() / 2],
                min_ms: times[0],
                max_ms: times[times.len() - 1],
            });
        }
        index.pool().close().await;
        Ok::<_, anyhow::Error>(out)
    }
    .await;
    db.drop_database().await;
    measured
}

/// The Markdown report of [`triage`].
pub fn triage_report(studies: i64, runs: usize, timings: &[TriageTiming]) -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(out, "# Triage worklist benchmark\n");
    let _ = writeln!(
        out,
        "Generated by `firstread bench triage --studies {studies}` on {}; {cores} cores, PostgreSQL on the same \
         machine. {studies} synthetic studies over 12 sites, each analysed by two packages, the COVID-19 one and \
         one described by its vocabulary (an emphysema class: 1 in 7 abnormal, 1 in 13 of the others \
         \"possibly\"), 1 in 10 with a second study version, 1 in 20 refused, 1 in 50 with feedback. Timed: `GET /triage/api/studies`'s query and its JSON rows \
         (`firstread_pages::worklist::page`), {runs} runs each after the data is analysed (`ANALYZE`); the page \
         itself adds the HTTP round trip. The statement runs with `jit = off`: PostgreSQL's estimate of the study \
         versions (1000 a study) made it JIT-compile the query, 0.9 s of 1.0 s per request at 10,000 studies.\n",
        chrono::Utc::now().format("%Y-%m-%d"),
    );
    let _ = writeln!(out, "| request | rows | matching | median ms | min-max ms |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for t in timings {
        let _ = writeln!(
            out,
            "| {} | {} | {} | **{:.1}** | {:.1}-{:.1} |",
            t.request, t.rows, t.total, t.median_ms, t.min_ms, t.max_ms
        );
    }
    out
}

/// What [`stow_memory`] measured.
#[derive(Debug, Clone)]
pub struct StowMemory {
    /// Request body (MiB).
    pub body_mib: f64,
    /// HTTP status of the STOW-RS response.
    pub status: u16,
    /// Seconds the request took.
    pub seconds: f64,
    /// Peak RSS of the process before the request (node started, MiB).
    pub rss_before_mib: f64,
    /// Peak RSS after it (MiB).
    pub rss_after_mib: f64,
}

/// Starts a node in this process (listen role, HTTP without authentication, a temporary
/// database on `postgres` and a temporary storage root under `storage_parent`), then sends one
/// STOW-RS request holding a single CT instance of `pixel_mib` MiB of Pixel Data, generated and
/// streamed 1 MiB at a time (the client holds no more than that), and reads the process's peak
/// RSS (VmHWM) before and after.
///
/// # Errors
/// PostgreSQL unreachable, the node not starting, the request failing.
pub async fn stow_memory(postgres: &str, storage_parent: &Path, pixel_mib: u64) -> anyhow::Result<StowMemory> {
    let db = TempDatabase::create(postgres).await?;
    let storage = tempfile::tempdir_in(storage_parent)?;
    let mut config = Config::default();
    config.database.url = db.url.clone();
    config.storage.root = storage.path().to_path_buf();
    config.dimse.listen = "127.0.0.1:0".parse()?;
    config.http.listen = "127.0.0.1:0".parse()?;
    config.http.auth = firstread_dicomweb::AuthMode::None;
    config.http.viewer_dir = None;
    config.log.filter = "warn".into();
    config.storage.high_watermark_percent = 99.0;
    config.storage.low_watermark_percent = 98.0;
    let node = crate::node::Node::start(&config, crate::node::Roles { listen: true, work: false }).await?;
    let measured = async {
        let addr = node.http_addr.context("HTTP")?;
        let (head, pixel_bytes) = huge_ct_part10(pixel_mib)?;
        let boundary = "firstread-bench-boundary";
        let opening = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
        let closing = format!("\r\n--{boundary}--\r\n").into_bytes();
        let body_bytes = (opening.len() + head.len() + closing.len()) as u64 + pixel_bytes;
        const CHUNK: u64 = 1 << 20;
        let zeros = bytes::Bytes::from(vec![0u8; CHUNK as usize]);
        let pixels = futures_util::stream::unfold(pixel_bytes, move |left| {
            let zeros = zeros.clone();
            async move {
                (left > 0)
                    .then(|| (Ok::<_, std::io::Error>(zeros.slice(..left.min(CHUNK) as usize)), left - left.min(CHUNK)))
            }
        });
        let body = futures_util::stream::iter([Ok(bytes::Bytes::from(opening)), Ok(bytes::Bytes::from(head))])
            .chain(pixels)
            .chain(futures_util::stream::iter([Ok(bytes::Bytes::from(closing))]));
        let rss_before_mib = peak_rss_mib().unwrap_or(0.0);
        let started = Instant::now();
        let response = reqwest::Client::new()
            .post(format!("http://{addr}/dicom-web/studies"))
            .header("content-type", format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"))
            .header("accept", "application/dicom+json")
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await?;
        let status = response.status().as_u16();
        let _ = response.text().await?;
        Ok::<_, anyhow::Error>(StowMemory {
            body_mib: body_bytes as f64 / (1u64 << 20) as f64,
            status,
            seconds: started.elapsed().as_secs_f64(),
            rss_before_mib,
            rss_after_mib: peak_rss_mib().unwrap_or(0.0),
        })
    }
    .await;
    node.stop().await;
    drop(db);
    measured
}

use futures_util::StreamExt as _;

/// A Part 10 CT Image Storage instance whose Pixel Data is `pixel_mib` MiB of zeros (16-bit,
/// 16384 columns, at most 2047 MiB): everything before the Pixel Data's value, and that value's
/// length.
fn huge_ct_part10(pixel_mib: u64) -> anyhow::Result<(Vec<u8>, u64)> {
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    let columns: u64 = 16384;
    let rows = pixel_mib * (1 << 20) / (columns * 2);
    anyhow::ensure!((1..=65535).contains(&rows), "{pixel_mib} MiB does not fit 65535 rows of {columns} columns");
    let pixel_bytes = rows * columns * 2;
    let uid = || format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
    let (study, series, sop) = (uid(), uid(), uid());
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag, vr, value: PrimitiveValue| obj.put(DataElement::new(tag, vr, value));
    put(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2".into());
    put(tags::SOP_INSTANCE_UID, VR::UI, sop.clone().into());
    put(tags::STUDY_INSTANCE_UID, VR::UI, study.into());
    put(tags::SERIES_INSTANCE_UID, VR::UI, series.into());
    put(tags::MODALITY, VR::CS, "CT".into());
    put(tags::PATIENT_ID, VR::LO, "BENCH".into());
    put(tags::ROWS, VR::US, PrimitiveValue::from(rows as u16));
    put(tags::COLUMNS, VR::US, PrimitiveValue::from(columns as u16));
    put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16));
    put(tags::BITS_STORED, VR::US, PrimitiveValue::from(16u16));
    put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15u16));
    put(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16));
    put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16));
    put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2".into());
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
        .media_storage_sop_instance_uid(sop)
        .transfer_syntax("1.2.840.10008.1.2.1")
        .build()?;
    let mut head = vec![0u8; 128];
    head.extend_from_slice(b"DICM");
    meta.write(&mut head)?;
    let ts = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
    obj.write_dataset_with_ts(&mut head, &ts)?;
    // (7FE0,0010) OW, reserved, 4-byte length: the value follows, streamed
    head.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
    head.extend_from_slice(&u32::try_from(pixel_bytes)?.to_le_bytes());
    Ok((head, pixel_bytes))
}

/// The Markdown note of [`stow_memory`].
pub fn stow_memory_report(m: &StowMemory) -> String {
    format!(
        "# STOW-RS memory (`firstread bench stow-memory`)\n\n\
         One STOW-RS request holding a single CT instance of {:.0} MiB (Pixel Data of zeros, streamed by the client 1 MiB \
         at a time) to a node in the same process (listen role, HTTP, fsync on). Peak RSS (VmHWM) of the process: \
         {:.0} MiB with the node started, {:.0} MiB after the request (HTTP {}, {:.1} s, {:.0} MiB/s). The part is \
         streamed to its temporary file as it arrives: memory does not grow with the part's size.\n",
        m.body_mib,
        m.rss_before_mib,
        m.rss_after_mib,
        m.status,
        m.seconds,
        m.body_mib / m.seconds.max(1e-9)
    )
}
