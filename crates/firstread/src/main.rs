//! The `firstread` command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use firstread::config::{Config, LogConfig, LogFormat};
use firstread::demo::{self, DemoOptions, DEFAULT_POSTGRES, DEFAULT_SAMPLE};
use firstread::{telemetry, Node, Roles};
use tracing::info;

/// firstread: a first read of chest CT within seconds of the last slice.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); FIRSTREAD_<SECTION>__<KEY> environment variables override it.
    #[arg(long, short, global = true, env = "FIRSTREAD_CONFIG")]
    config: Option<PathBuf>,
    /// Log format (overrides the configuration).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node: the DICOM listener (Store SCP), study assembly and analysis workers.
    Serve,
    /// Run only the DICOM listener (and study assembly); any number may share one database.
    Listen,
    /// Run only analysis workers (and study assembly); any number may share one database.
    Work,
    /// List recent studies, their assembly state and their jobs.
    Status {
        /// How many studies.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Operator actions on jobs (analysis, export, notify); `firstread status` lists them.
    Jobs {
        #[command(subcommand)]
        what: JobsCommand,
    },
    /// Model packages: the installed versions and the role each runs in; two versions compared.
    Models {
        #[command(subcommand)]
        what: ModelsCommand,
    },
    /// Queues a model's analysis of stored studies (re-analysis), at a priority below live
    /// studies: the latest study version of each study whose last image arrived on or after
    /// `--since`, skipping those the model version already read.
    Reanalyse {
        /// The model, `NAME` (its active version here) or `NAME@VERSION` (a version this node
        /// runs, active or shadow).
        #[arg(long)]
        model: String,
        /// Studies whose last image arrived on or after this date (YYYY-MM-DD, UTC) or time
        /// (RFC 3339).
        #[arg(long, value_parser = parse_since)]
        since: chrono::DateTime<chrono::Utc>,
        /// Only studies of this site.
        #[arg(long)]
        site: Option<String>,
        /// Count what would be queued; queue nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Users of the HTTP side: people (radiologist, admin) and machine clients (service).
    User {
        #[command(subcommand)]
        what: UserCommand,
    },
    /// Removes the received images of studies beyond `[retention]` (max_age, max_storage_bytes),
    /// keeping their results, the audit trail and an index stub; prunes old job runs and
    /// associations. A node with the work role does this every `retention.interval`.
    Purge {
        /// Only list what would be purged.
        #[arg(long)]
        dry_run: bool,
    },
    /// Radiologist feedback on first reads.
    Feedback {
        #[command(subcommand)]
        what: FeedbackCommand,
    },
    /// The audit trail: who accessed which study, when, how, with what outcome (newest first).
    Audit {
        /// Only this study's events.
        #[arg(long)]
        study: Option<String>,
        /// Only this actor's (AE title, "bearer token", "session cookie", "anonymous").
        #[arg(long)]
        actor: Option<String>,
        /// Only this action's (store-in, store-out, stow, query, retrieve, feedback, login).
        #[arg(long)]
        action: Option<String>,
        /// Only from this time on (RFC 3339, e.g. 2026-12-06T08:00:00Z).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// At most this many events.
        #[arg(long, default_value_t = 200)]
        limit: i64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Print the effective configuration (file + environment) as TOML, secrets redacted, and exit.
    Config,
    /// Send DICOM files with C-STORE over one association, like dcmtk storescu (folders are
    /// walked recursively; files that are not DICOM Part 10 are skipped with a note).
    Send {
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The receiver, as AE@host:port.
        #[arg(long)]
        to: firstread_dimse::Destination,
        /// Our calling AE title (default: the node's AE title).
        #[arg(long)]
        calling_ae: Option<String>,
    },
    /// The main job on the bundled sample CT: starts a node with a temporary database and storage
    /// folder and a receiving AE for the results, pushes the sample with C-STORE, waits for the SR,
    /// SEG and key images to come back, writes them to --out and prints the first read.
    Demo {
        /// Folder of the series to send (its files named 1-*.dcm).
        #[arg(long, default_value = DEFAULT_SAMPLE)]
        sample: PathBuf,
        /// Output folder for the received objects and first-read.json (emptied when a previous
        /// demo wrote it; any other non-empty folder is refused).
        #[arg(long, default_value = "demo-output")]
        out: PathBuf,
        /// PostgreSQL server on which the temporary database is created (URL of any database
        /// there; the role needs CREATEDB).
        #[arg(long, default_value = DEFAULT_POSTGRES)]
        postgres: String,
        /// The node's stable_after: how long after the last instance the study counts as complete.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        stable_after: Duration,
        /// Give up when the results are not back this long after the last C-STORE-RSP.
        #[arg(long, default_value = "300s", value_parser = parse_duration)]
        timeout: Duration,
        /// Print the first read, timings and output paths as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks that write Markdown tables (not tests: run on an idle machine).
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Queue a dead job again now (attempts counted from zero), or every dead job with --dead.
    Retry {
        /// The job id (`firstread status`).
        #[arg(required_unless_present = "dead", conflicts_with = "dead")]
        id: Option<i64>,
        /// Every dead job (of --kind when given).
        #[arg(long)]
        dead: bool,
        /// With --dead: only this kind (analysis, export, notify).
        #[arg(long, requires = "dead", value_parser = firstread_queue::JobKind::ALL.map(firstread_queue::JobKind::as_str))]
        kind: Option<String>,
    },
    /// End a queued or running job as dead ("cancelled by an operator").
    Cancel {
        /// The job id.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// The packages installed under `worker.models_dir`, each version's role (active, shadow or
    /// not run) by `worker.models` and `worker.shadow`.
    List,
    /// Compares two versions of a model over the study versions both analysed: extent-class
    /// agreement, mean absolute differences of involvement and severity score, agreement of each
    /// with the radiologist's class where feedback gives one.
    Compare {
        /// The model (its folder name).
        name: String,
        /// Version A (e.g. the active one).
        a: String,
        /// Version B (e.g. the shadow).
        b: String,
        /// List at most this many study versions (the most recent); the figures cover all.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Adds a user. People get a password (read from stdin with --password-stdin, at least 12
    /// characters); machine clients (role service) get tokens with `user token`.
    Add {
        /// Login name (1-64 of A-Z a-z 0-9 . _ @ -).
        name: String,
        /// radiologist, admin or service.
        #[arg(long, default_value = "radiologist")]
        role: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        /// A site whose studies the user sees (repeat for several; `*`: every site). None: the
        /// default site.
        #[arg(long = "site")]
        sites: Vec<String>,
    },
    /// Lists the users.
    List,
    /// Sets a user's password (read from the first line of stdin) and ends their sessions.
    Password { name: String },
    /// Sets the sites whose studies a user sees (repeat --site; `*`: every site).
    Sites {
        name: String,
        #[arg(long = "site", required = true)]
        sites: Vec<String>,
    },
    /// Disables a user: their tokens and sessions stop working at once.
    Disable { name: String },
    /// Enables a disabled user again (their sessions were ended).
    Enable { name: String },
    /// Revokes every API token of a user (e.g. one leaked); issue a new one with `user token`.
    RevokeTokens { name: String },
    /// Issues an API token for a user and prints it (only once: it is stored hashed).
    Token {
        name: String,
        /// What the token is for (e.g. the client's name).
        #[arg(long, default_value = "")]
        label: String,
    },
}

#[derive(Debug, Subcommand)]
enum FeedbackCommand {
    /// Every statement (agree / disagree with the class given / not assessable), oldest first,
    /// with the model's class and score, to stdout or --out.
    Export {
        /// csv (RFC 4180, header row) or json.
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Volume assembly, model and measurements on the sample and a 300-slice study made from it.
    Analysis {
        /// Folder of the sample series.
        #[arg(long, default_value = "data/ct/lung-dx-a0002-b40f")]
        sample: PathBuf,
        /// Runs per case (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Write the table here (and print it).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The triage worklist's query on many synthetic studies (a temporary database).
    Triage {
        /// Studies.
        #[arg(long, default_value_t = 10_000)]
        studies: i64,
        /// Runs per request (the median is reported).
        #[arg(long, default_value_t = 9)]
        runs: usize,
        /// PostgreSQL server on which the temporary database is created.
        #[arg(long, default_value = DEFAULT_POSTGRES)]
        postgres: String,
        /// Write the table here (and print it).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Peak RSS of a node receiving one STOW-RS request of a single huge instance (streamed).
    StowMemory {
        /// Pixel Data of the instance (MiB; at most 2047).
        #[arg(long, default_value_t = 1024)]
        pixel_mib: u64,
        /// PostgreSQL server on which the temporary database is created.
        #[arg(long, default_value = DEFAULT_POSTGRES)]
        postgres: String,
        /// Where the temporary storage root is made.
        #[arg(long, default_value = "/tmp")]
        storage: PathBuf,
        /// Write the note here (and print it).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A live study's time to result while a re-analysis of stored studies runs (a new model
    /// version made active and `firstread reanalyse` queued), against an idle queue.
    Reanalysis {
        /// Folder of the sample series (its files named 1-*.dcm).
        #[arg(long, default_value = DEFAULT_SAMPLE)]
        sample: PathBuf,
        /// Studies stored and read by the old version, then re-analysed.
        #[arg(long, default_value_t = 50)]
        studies: usize,
        /// Timed live studies on the idle queue and during the re-analysis (each).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Model name.
        #[arg(long, default_value = "covid19-lung-ct")]
        model: String,
        /// The version the stored studies are read with.
        #[arg(long, default_value = "0.2.2")]
        old: String,
        /// The version made active, which re-analyses them.
        #[arg(long, default_value = "0.2.4")]
        new: String,
        /// The node's stable_after.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        stable_after: Duration,
        /// PostgreSQL server on which the temporary database is created.
        #[arg(long, default_value = DEFAULT_POSTGRES)]
        postgres: String,
        /// Write the report here (and print it).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Last C-STORE-RSP to SR acknowledged by the receiving AE on a warm in-process node, split
    /// into stages, for the sample and a 300-slice study made from it.
    TimeToResult {
        /// Folder of the sample series (its files named 1-*.dcm).
        #[arg(long, default_value = DEFAULT_SAMPLE)]
        sample: PathBuf,
        /// Slice counts of the studies made from the sample.
        #[arg(long, value_delimiter = ',', default_value = "30,300")]
        slices: Vec<usize>,
        /// Timed runs per study (after one warm-up run; the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The node's stable_after.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        stable_after: Duration,
        /// PostgreSQL server on which temporary databases are created.
        #[arg(long, default_value = DEFAULT_POSTGRES)]
        postgres: String,
        /// Write the report here (and print it).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Parses "1s", "500ms", "2m" (humantime).
/// `YYYY-MM-DD` (midnight UTC) or an RFC 3339 time.
fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(date) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(date.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{s:?} is neither YYYY-MM-DD nor an RFC 3339 time: {e}"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// libgomp (libtorch's OpenMP) reads OMP_WAIT_POLICY once, when it loads, before `main`; its
/// default spin-waiting made the model 4-40x slower on a loaded 2-core machine. When the variable
/// is unset, re-execute this binary (same PID) with OMP_WAIT_POLICY=PASSIVE.
fn ensure_passive_openmp() {
    #[cfg(unix)]
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        use std::os::unix::process::CommandExt;
        if let Ok(exe) = std::env::current_exe() {
            let err = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .env("OMP_WAIT_POLICY", "PASSIVE")
                .exec();
            eprintln!("warning: could not re-execute with OMP_WAIT_POLICY=PASSIVE: {err}");
        }
    }
}

fn main() -> anyhow::Result<()> {
    ensure_passive_openmp();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = Config::load(cli.config.as_deref()).map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    if let Some(format) = cli.log_format {
        config.log.format = format;
    }
    // The demo and the time-to-result benchmark draw progress bars on stderr: only warnings
    // there unless a log filter was chosen.
    let quiet = matches!(
        cli.command,
        Command::Demo { .. } | Command::Bench { what: Bench::TimeToResult { .. } | Bench::Reanalysis { .. } }
    );
    if quiet && config.log.filter == LogConfig::default().filter && std::env::var_os("FIRSTREAD_LOG__FILTER").is_none()
    {
        config.log.filter = "warn".into();
    }
    telemetry::init(&config.log);
    match cli.command {
        Command::Serve => serve(&config, Roles::ALL).await,
        Command::Listen => serve(&config, Roles { listen: true, work: false }).await,
        Command::Work => serve(&config, Roles { listen: false, work: true }).await,
        Command::Status { limit } => {
            let index = connect(&config).await?;
            print!("{}", firstread::status::render(index.pool(), limit).await?);
            Ok(())
        }
        Command::Jobs { what } => {
            let index = connect(&config).await?;
            let queue = firstread_queue::PgQueue::new(index.pool().clone());
            match what {
                JobsCommand::Retry { id: Some(id), .. } => {
                    anyhow::ensure!(queue.retry(id).await?, "no dead job {id}");
                    println!("job {id} queued again");
                }
                JobsCommand::Retry { id: None, kind, .. } => {
                    let kind = kind
                        .as_deref()
                        .map(|k| firstread_queue::JobKind::parse(k).with_context(|| format!("unknown job kind {k}")))
                        .transpose()?;
                    println!("{} dead job(s) queued again", queue.retry_dead(kind).await?);
                }
                JobsCommand::Cancel { id } => {
                    anyhow::ensure!(queue.cancel(id).await?, "no queued or running job {id}");
                    println!("job {id} cancelled");
                }
            }
            Ok(())
        }
        Command::Models { what: ModelsCommand::List } => {
            let installed = firstread::models::installed(&config.worker.models_dir).map_err(anyhow::Error::msg)?;
            let runs = config.worker.model_runs().map_err(anyhow::Error::msg)?;
            println!("{:<32} {:<16} {:<8} FOLDER", "MODEL", "VERSION", "ROLE");
            for (name, versions) in &installed {
                for version in versions.iter().rev() {
                    let role = runs
                        .iter()
                        .find(|r| r.model.name == *name && r.model.version == *version)
                        .map_or("-", |r| if r.model.shadow { "shadow" } else { "active" });
                    let folder = config.worker.models_dir.join(name).join(version);
                    println!("{name:<32} {version:<16} {role:<8} {}", folder.display());
                }
            }
            Ok(())
        }
        Command::Models { what: ModelsCommand::Compare { name, a, b, limit, json } } => {
            anyhow::ensure!(a != b, "compare two different versions of {name}");
            let index = connect(&config).await?;
            let comparison =
                firstread::models::compare(index.pool(), &name, &a, &b, &firstread_sites::Scope::Every, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&comparison)?);
            } else {
                print!("{}", comparison.render());
            }
            Ok(())
        }
        Command::Reanalyse { model, since, site, dry_run } => {
            let runs = config.worker.model_runs().map_err(anyhow::Error::msg)?;
            let run = firstread::models::reanalysis_run(&runs, &model).map_err(anyhow::Error::msg)?;
            let index = connect(&config).await?;
            let request = firstread_queue::reanalysis::Reanalysis {
                model: &run.name,
                model_version: &run.version,
                shadow: run.shadow,
                takes: &run.takes,
                since,
                site: site.as_deref(),
                max_attempts: config.worker.max_attempts,
                dry_run,
            };
            let summary = firstread_queue::reanalysis::queue_reanalysis(index.pool(), &request).await?;
            print!("{}", firstread::models::render_reanalysis(&run, &summary, dry_run));
            Ok(())
        }
        Command::Audit { study, actor, action, since, limit, json } => {
            let index = connect(&config).await?;
            let filter = firstread_audit::Filter { study, actor, action, since, limit };
            let events = firstread_audit::list(index.pool(), &filter).await?;
            if json {
                for e in &events {
                    println!("{}", serde_json::to_string(e)?);
                }
            } else {
                println!(
                    "{:<25} {:<10} {:<18} {:<22} {:<8} {:<66} {:<16} DETAIL",
                    "AT", "ACTION", "ACTOR", "FROM", "OUTCOME", "STUDY", "SITE"
                );
                for e in &events {
                    println!(
                        "{:<25} {:<10} {:<18} {:<22} {:<8} {:<66} {:<16} {}",
                        e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
                        e.action,
                        e.actor,
                        e.address.as_deref().unwrap_or("-"),
                        e.outcome,
                        e.study_instance_uid.as_deref().unwrap_or("-"),
                        e.site.as_deref().unwrap_or("-"),
                        e.detail
                    );
                }
            }
            Ok(())
        }
        Command::User { what } => {
            let index = connect(&config).await?;
            let pool = index.pool();
            // what changes is on the audit trail, by the operator's OS user (never a password)
            let change = match &what {
                UserCommand::Add { name, role, sites, .. } => {
                    Some(serde_json::json!({ "command": "user add", "user": name, "role": role, "sites": sites }))
                }
                UserCommand::Disable { name } => Some(serde_json::json!({ "command": "user disable", "user": name })),
                UserCommand::Enable { name } => Some(serde_json::json!({ "command": "user enable", "user": name })),
                UserCommand::RevokeTokens { name } => {
                    Some(serde_json::json!({ "command": "user revoke-tokens", "user": name }))
                }
                UserCommand::Token { name, label } => {
                    Some(serde_json::json!({ "command": "user token", "user": name, "label": label }))
                }
                UserCommand::Password { name } => Some(serde_json::json!({ "command": "user password", "user": name })),
                UserCommand::Sites { name, sites } => {
                    Some(serde_json::json!({ "command": "user sites", "user": name, "sites": sites }))
                }
                UserCommand::List => None,
            };
            let outcome = user_command(pool, what).await;
            if let Some(detail) = change {
                let operator =
                    std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "operator".into());
                let event = firstread_audit::Event {
                    actor: firstread_audit::Actor::Node(operator),
                    address: None,
                    action: firstread_audit::Action::Configure,
                    study: None,
                    site: None,
                    success: outcome.is_ok(),
                    detail,
                };
                if let Err(e) = firstread_audit::record(pool, &event).await {
                    eprintln!("warning: the change could not be recorded in the audit trail: {e}");
                }
            }
            outcome
        }
        Command::Purge { dry_run } => {
            anyhow::ensure!(
                config.retention.enabled(),
                "no retention configured: set retention.max_age and/or retention.max_storage_bytes"
            );
            let index = connect(&config).await?;
            let storage = firstread_store::Storage::open(&config.storage.root, config.storage.fsync).await?;
            let report =
                firstread::retention::run(index.pool(), &storage, &config.retention, &config.node.ae_title, dry_run)
                    .await?;
            let verb = if dry_run { "would purge" } else { "purged" };
            for c in &report.studies {
                println!(
                    "{verb} {} {} ({} instances, {} bytes, last received {}, {:?})",
                    c.site,
                    c.study_instance_uid,
                    c.instances,
                    c.bytes,
                    c.last_received_at.format("%Y-%m-%d %H:%M"),
                    c.reason
                );
            }
            println!(
                "{} studies, {} bytes of received images {verb}; {} job runs and {} associations pruned",
                report.studies.len(),
                report.bytes,
                report.job_runs_pruned,
                report.associations_pruned
            );
            Ok(())
        }
        Command::Feedback { what: FeedbackCommand::Export { format, out } } => {
            let index = connect(&config).await?;
            let format = match format {
                ExportFormat::Csv => firstread_pages::feedback::Format::Csv,
                ExportFormat::Json => firstread_pages::feedback::Format::Json,
            };
            let text = firstread_pages::feedback::export(index.pool(), format, &firstread_sites::Scope::Every).await?;
            match out {
                Some(path) => std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(())
        }
        Command::Migrate => {
            let index = connect(&config).await?;
            index.migrate().await.context("migrating")?;
            info!("database migrated");
            Ok(())
        }
        Command::Bench { what: Bench::Analysis { sample, repeats, out } } => {
            firstread_inference::set_threads(config.worker.threads);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&sample)
                .with_context(|| format!("reading {}", sample.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
                .collect();
            files.sort();
            let runs = config.worker.model_runs().map_err(anyhow::Error::msg)?;
            let package = runs.into_iter().find(|r| !r.model.shadow).context("no active model")?.dir;
            let device = config.worker.device;
            let on = device.resolved_name()?;
            let table =
                tokio::task::spawn_blocking(move || firstread::bench::analysis(&package, device, &files, repeats))
                    .await??;
            let report = format!(
                "# Analysis benchmark\n\nMachine: {} cores; `firstread bench analysis` (release build), median of {repeats} runs, \
                 the TorchScript on {on} (`[worker] device = \"{device}\"`; the node's own steps on the CPU). Peak RSS is \
                 the process's high-water mark after the case.\n\n{table}",
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
            );
            emit(&report, out.as_deref())
        }
        Command::Demo { sample, out, postgres, stable_after, timeout, json } => {
            let opts = DemoOptions { sample, out, postgres, stable_after, timeout };
            let report = demo::run(&opts, &config).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(())
        }
        Command::Bench { what: Bench::TimeToResult { sample, slices, runs, stable_after, postgres, out } } => {
            let files = demo::sample_files(&sample)?;
            let cases =
                firstread::bench::time_to_result(&config, &postgres, &files, &slices, runs.max(1), stable_after)
                    .await?;
            let report = firstread::bench::time_to_result_report(&cases, stable_after);
            emit(&report, out.as_deref())
        }
        Command::Bench {
            what: Bench::Reanalysis { sample, studies, runs, model, old, new, stable_after, postgres, out },
        } => {
            let files = demo::sample_files(&sample)?;
            let b = firstread::bench::reanalysis::reanalysis_backlog(
                &config,
                &postgres,
                &files,
                &model,
                [&old, &new],
                studies,
                runs.max(1),
                stable_after,
            )
            .await?;
            emit(&firstread::bench::reanalysis::reanalysis_report(&b, &sample), out.as_deref())
        }
        Command::Bench { what: Bench::StowMemory { pixel_mib, postgres, storage, out } } => {
            let m = firstread::bench::stow_memory(&postgres, &storage, pixel_mib).await?;
            emit(&firstread::bench::stow_memory_report(&m), out.as_deref())
        }
        Command::Bench { what: Bench::Triage { studies, runs, postgres, out } } => {
            let timings = firstread::bench::triage(&postgres, studies, runs).await?;
            let report = firstread::bench::triage_report(studies, runs, &timings);
            emit(&report, out.as_deref())
        }
        Command::Send { paths, to, calling_ae } => {
            let scu = firstread_dimse::ScuConfig {
                calling_ae_title: calling_ae.unwrap_or_else(|| config.node.ae_title.clone()),
                ..firstread_dimse::ScuConfig::default()
            };
            firstread::send::run(&paths, &to, &scu).await
        }
        Command::Config => {
            print!("{}", toml_of(&config)?);
            Ok(())
        }
    }
}

async fn serve(config: &Config, roles: Roles) -> anyhow::Result<()> {
    let node = Node::start(config, roles).await?;
    if let Some(addr) = node.dimse_addr {
        info!(dimse = %addr, ae_title = %config.node.ae_title, "firstread listening");
    }
    let token = node.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down");
        token.cancel();
    });
    node.wait().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn toml_of(config: &Config) -> anyhow::Result<String> {
    toml::to_string_pretty(&config.redacted()).context("serializing the configuration")
}

/// The index of the configured database, for the one-shot commands (two connections).
async fn connect(config: &Config) -> anyhow::Result<firstread_store::Index> {
    firstread_store::Index::connect(&config.database.url, 2).await.context("connecting")
}

/// Prints a benchmark report, and writes it to `out` when given.
fn emit(report: &str, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    print!("{report}");
    if let Some(out) = out {
        std::fs::write(out, report).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// `firstread user ...`.
async fn user_command(pool: &sqlx::PgPool, what: UserCommand) -> anyhow::Result<()> {
    match what {
        UserCommand::Add { name, role, password_stdin, sites } => {
            let role: firstread_users::Role = role.parse()?;
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                Some(line.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                None
            };
            anyhow::ensure!(
                password.is_some() || role == firstread_users::Role::Service,
                "a {role} signs in with a password: --password-stdin"
            );
            firstread_users::add(pool, &name, role, password.as_deref(), &sites).await?;
            println!("user {name} ({role}) added");
        }
        UserCommand::List => {
            println!(
                "{:<32} {:<12} {:<9} {:<9} {:>6} {:<16} SITES",
                "NAME", "ROLE", "PASSWORD", "DISABLED", "TOKENS", "CREATED"
            );
            for u in firstread_users::list(pool).await? {
                println!(
                    "{:<32} {:<12} {:<9} {:<9} {:>6} {:<16} {}",
                    u.name,
                    u.role,
                    if u.has_password { "yes" } else { "no" },
                    if u.disabled { "yes" } else { "no" },
                    u.tokens,
                    u.created_at.format("%Y-%m-%d %H:%M"),
                    u.sites.join(",")
                );
            }
        }
        UserCommand::Password { name } => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            firstread_users::set_password(pool, &name, line.trim_end_matches(['\r', '\n'])).await?;
            println!("password of {name} set; their sessions ended");
        }
        UserCommand::Sites { name, sites } => {
            firstread_users::set_sites(pool, &name, &sites).await?;
            println!("user {name} sees the sites {}", sites.join(", "));
        }
        UserCommand::Disable { name } => {
            firstread_users::set_disabled(pool, &name, true).await?;
            println!("user {name} disabled");
        }
        UserCommand::Enable { name } => {
            firstread_users::set_disabled(pool, &name, false).await?;
            println!("user {name} enabled");
        }
        UserCommand::RevokeTokens { name } => {
            println!("{} token(s) of {name} revoked", firstread_users::revoke_tokens(pool, &name).await?);
        }
        UserCommand::Token { name, label } => {
            println!("{}", firstread_users::issue_token(pool, &name, &label).await?);
        }
    }
    Ok(())
}
