//! Starting and stopping a node: storage, database, the DIMSE listener, study assembly and
//! workers, wired together by role. Used by `firstread serve|listen|work` and by the tests
//! (port 0, their own database).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use firstread_dimse::StoreScp;
use firstread_queue::worker::{listen, listen_channel, run_worker};
use firstread_queue::{Assembly, AssemblyConfig, Backoff, JobHandler, JobKind, PgQueue, WorkerConfig};
use firstread_store::{Index, Storage};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::analysis::Analysis;
use crate::config::Config;
use crate::export::Export;
use crate::ingest::Ingest;
use crate::notify::{Deliveries, Notifications};

/// Which parts of the node run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The DIMSE listener (Store SCP) and its association heartbeats.
    pub listen: bool,
    /// Analysis workers.
    pub work: bool,
}

impl Roles {
    /// Listener and workers (`firstread serve`).
    pub const ALL: Roles = Roles { listen: true, work: true };
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// The address the Store SCP listens on for plain TCP (`None` without the listen role, or
    /// with `dimse.plain = false`).
    pub dimse_addr: Option<SocketAddr>,
    /// The address the Store SCP listens on for DICOM TLS (`None` without the listen role or
    /// `[dimse.tls]`).
    pub dimse_tls_addr: Option<SocketAddr>,
    /// The address DICOMweb listens on (`None` without the listen role or with HTTP off).
    pub http_addr: Option<SocketAddr>,
    /// The index (shared pool).
    pub index: Index,
    /// The storage root.
    pub storage: Storage,
    /// This process's node id (associations and job leases carry it).
    pub node_id: String,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Node {
    /// Opens storage, connects and migrates the database, then starts the given roles. Study
    /// assembly (promotion of ready studies) runs with either role: it is safe to run anywhere.
    ///
    /// # Errors
    /// Storage root not writable, database unreachable, migration failure, port in use, model
    /// versions that cannot run (`crate::models::plan`).
    pub async fn start(config: &Config, roles: Roles) -> anyhow::Result<Node> {
        // counters count from the start, whether or not HTTP serves them
        let _ = crate::telemetry::metrics();
        config.check_sites().map_err(anyhow::Error::msg)?;
        // every role promotes studies to jobs, one per model version: checked before anything starts
        let model_runs = config.worker.model_runs().map_err(anyhow::Error::msg)?;
        let storage = Storage::open(&config.storage.root, config.storage.fsync)
            .await
            .with_context(|| format!("opening storage root {}", config.storage.root.display()))?;
        let index = Index::connect(&config.database.url, config.database.max_connections)
            .await
            .context("connecting to PostgreSQL")?;
        index.migrate().await.context("migrating the database")?;
        let node_id = node_id();
        // the configuration a node runs with is on the audit trail (who may send, to which sites)
        let started = firstread_audit::Event {
            actor: firstread_audit::Actor::Node(config.node.ae_title.clone()),
            address: None,
            action: firstread_audit::Action::Configure,
            study: None,
            site: None,
            success: true,
            detail: serde_json::json!({
                "event": "node started", "node_id": node_id, "listen": roles.listen, "work": roles.work,
                "sites": config.sites(), "peers": config.peers.iter().map(|p| &p.ae_title).collect::<Vec<_>>(),
                "unknown_peers": config.dimse.unknown_peers, "dicom_tls": config.dimse.tls.is_some(),
                "https": config.http.tls.is_some(), "version": env!("CARGO_PKG_VERSION"),
                "models": model_runs.iter().filter(|r| !r.model.shadow)
                    .map(|r| format!("{}@{}", r.model.name, r.model.version)).collect::<Vec<_>>(),
                "shadow": model_runs.iter().filter(|r| r.model.shadow)
                    .map(|r| format!("{}@{}", r.model.name, r.model.version)).collect::<Vec<_>>(),
            }),
        };
        if let Err(e) = firstread_audit::record(index.pool(), &started).await {
            warn!(error = %e, "could not record the start in the audit trail");
        }
        let assembly = Assembly::new(
            index.pool().clone(),
            node_id.clone(),
            AssemblyConfig {
                models: model_runs.iter().map(|r| r.model.clone()).collect(),
                max_attempts: config.worker.max_attempts,
                association_stale_after: config.assembly.association_stale_after,
                early_ready: config.assembly.early_ready,
                early_ready_grace: config.assembly.early_ready_grace,
                early_ready_trust_after: config.assembly.early_ready_trust_after,
                early_min_slices: early_min_slices(&model_runs),
            },
        );
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut dimse_addr = None;
        let mut dimse_tls_addr = None;
        let mut http_addr = None;

        // a node that listens and works decodes each stored image ahead, for the volume
        let slices = (roles.listen && roles.work && config.worker.prefetch_mib > 0).then(|| {
            let padding_hu = model_runs
                .iter()
                .find_map(|r| r.manifest.as_ref().map(|m| m.input.padding_hu))
                .unwrap_or(firstread_volume::VolumeContract::default().padding_hu);
            let budget = usize::try_from(config.worker.prefetch_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
            Arc::new(firstread_volume::SliceCache::new(budget, padding_hu))
        });
        let prefetcher =
            slices.clone().map(|cache| firstread_volume::Prefetcher::start(cache, PREFETCH_QUEUE)).transpose()?;

        if roles.listen {
            if config.allowed_peers().is_some_and(|p| p.is_empty()) {
                warn!(
                    "no [[peers]] configured and dimse.unknown_peers = \"refuse\": every association will be refused \
                     (A-ASSOCIATE-RJ reason 3); list the senders as [[peers]]"
                );
            }
            for peer in config
                .peers
                .iter()
                .filter(|p| p.host.as_deref().is_some_and(|h| h.parse::<std::net::IpAddr>().is_err()))
            {
                warn!(
                    ae_title = %peer.ae_title,
                    "peer host is not an IP address: associations with its AE title are accepted from any address \
                     (its host is only where results go)"
                );
            }
            if !config.dimse.plain && config.dimse.tls.is_none() {
                anyhow::bail!("dimse.plain = false needs [dimse.tls]: no DICOM listener would run");
            }
            let plain = match config.dimse.plain {
                true => Some(
                    tokio::net::TcpListener::bind(config.dimse.listen)
                        .await
                        .with_context(|| format!("binding {}", config.dimse.listen))?,
                ),
                false => None,
            };
            let tls = match &config.dimse.tls {
                Some(t) => {
                    let files = t.files();
                    let server = firstread_tls::ServerTls::load(files)
                        .with_context(|| format!("DICOM TLS ({})", t.certificate.display()))?;
                    let listener = tokio::net::TcpListener::bind(t.listen)
                        .await
                        .with_context(|| format!("binding {} (DICOM TLS)", t.listen))?;
                    Some((listener, Arc::new(server)))
                }
                None => None,
            };
            dimse_addr = plain.as_ref().map(|l| l.local_addr()).transpose()?;
            dimse_tls_addr = tls.as_ref().map(|(l, _)| l.local_addr()).transpose()?;
            let ingest = Arc::new(Ingest::new(
                storage.clone(),
                index.clone(),
                assembly.clone(),
                config.assembly.clone(),
                &config.node.ae_title,
                &config.dimse.extra_sop_classes,
                config.peer_sites().map_err(anyhow::Error::msg)?,
                config.storage.watermarks().map_err(anyhow::Error::msg)?,
                prefetcher,
            ));
            if config.http.enabled {
                http_addr =
                    Some(crate::http::start(config, &index, &storage, ingest.clone(), &mut tasks, &shutdown).await?);
            }
            let scp = StoreScp::new(config.scp(), ingest);
            if let Some((listener, server)) = tls {
                tasks.spawn(reload_on_hangup("DICOM TLS", server.clone(), shutdown.clone()));
                let (scp, token) = (scp.clone(), shutdown.clone());
                tasks.spawn(async move {
                    if let Err(e) = scp.serve_tls(listener, server, token).await {
                        warn!(error = %e, "Store SCP (DICOM TLS) stopped");
                    }
                });
            }
            if let Some(listener) = plain {
                let token = shutdown.clone();
                tasks.spawn(async move {
                    if let Err(e) = scp.serve(listener, token).await {
                        warn!(error = %e, "Store SCP stopped");
                    }
                });
            }
        }
        // woken when an association ends (on this node or another), not only on its tick
        let released = Arc::new(Notify::new());
        let on_release = released.clone();
        tasks.spawn(listen_channel(
            index.pool().clone(),
            "firstread_assembly",
            move |_| on_release.notify_one(),
            shutdown.clone(),
        ));
        tasks.spawn(assemble(assembly, config.assembly.clone(), roles.listen, released, shutdown.clone()));

        if roles.work {
            let queue = Arc::new(PgQueue::new(index.pool().clone()));
            firstread_inference::set_threads(config.worker.threads);
            let notify = Arc::new(config.notify.clone().resolve()?);
            let export_config = config.export().map_err(|e| anyhow::anyhow!(e))?;
            let analysis = Analysis::load(
                index.clone(),
                storage.clone(),
                &model_runs,
                config.worker.device,
                export_config.clone(),
                &config.node.ae_title,
            )?;
            // a rule naming a class no active package states would never send: refused here
            let vocabularies = analysis.active_classifications();
            let packages: Vec<firstread_notify::config::Vocabulary<'_>> =
                vocabularies.iter().map(|(name, classes)| (name.as_str(), classes.as_slice())).collect();
            notify.check_vocabulary(&packages)?;
            let mut analysis = analysis
                .with_notifications(Notifications::new(notify.clone()))
                .with_memory_budget(config.worker.memory_budget_mib);
            if let Some(cache) = slices {
                analysis = analysis.with_slice_cache(cache);
            }
            let handler = Arc::new(analysis);
            let exporter =
                Arc::new(Export::new(storage.clone(), index.pool().clone(), export_config, &config.node.ae_title));
            let wake = Arc::new(Notify::new());
            tasks.spawn(listen(index.pool().clone(), wake.clone(), shutdown.clone()));
            tasks.spawn(crate::retention::housekeeping(
                index.pool().clone(),
                storage.clone(),
                config.retention.clone(),
                config.node.ae_title.clone(),
                shutdown.clone(),
            ));
            let analysis = WorkerConfig {
                kind: JobKind::Analysis,
                worker_id: format!("{node_id}/analysis"),
                lease: config.worker.lease,
                poll_interval: config.worker.poll_interval,
                backoff: Backoff { base: config.worker.backoff_base, max: config.worker.backoff_max },
                hold_for: config.worker.hold_for,
            };
            let export = WorkerConfig {
                kind: JobKind::Export,
                worker_id: format!("{node_id}/export"),
                backoff: Backoff { base: config.export.backoff_base, max: config.export.backoff_max },
                hold_for: std::time::Duration::ZERO,
                ..analysis.clone()
            };
            let workers = Workers { tasks: &mut tasks, queue: &queue, wake: &wake, shutdown: &shutdown };
            workers.spawn(config.worker.concurrency, &analysis, &handler);
            let workers = Workers { tasks: &mut tasks, queue: &queue, wake: &wake, shutdown: &shutdown };
            workers.spawn(config.export.concurrency, &export, &exporter);
            // no channel, no delivery: no workers polling for them
            if !notify.channels.is_empty() {
                let deliveries = Arc::new(Deliveries::new(notify.clone())?);
                let deliver = WorkerConfig {
                    kind: JobKind::Notify,
                    worker_id: format!("{node_id}/notify"),
                    backoff: Backoff { base: notify.backoff_base, max: notify.backoff_max },
                    ..export.clone()
                };
                let workers = Workers { tasks: &mut tasks, queue: &queue, wake: &wake, shutdown: &shutdown };
                workers.spawn(notify.concurrency, &deliver, &deliveries);
            }
        }
        info!(node_id = %node_id, listen = roles.listen, work = roles.work, http = ?http_addr, "node started");
        Ok(Node { dimse_addr, dimse_tls_addr, http_addr, index, storage, node_id, shutdown, tasks })
    }

    /// A token that stops the node when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops the node and waits for its tasks (associations in progress: bounded by the idle
    /// timeout; a job in progress is abandoned and its lease expires).
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the node stops (after its shutdown token is cancelled).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// What every worker task shares.
struct Workers<'a> {
    tasks: &'a mut JoinSet<()>,
    queue: &'a Arc<PgQueue>,
    wake: &'a Arc<Notify>,
    shutdown: &'a CancellationToken,
}

impl Workers<'_> {
    /// Spawns `n` (at least one) workers running `handler`, with ids `<template id><i>`.
    fn spawn<H: JobHandler>(self, n: usize, template: &WorkerConfig, handler: &Arc<H>) {
        for i in 0..n.max(1) {
            let config = WorkerConfig { worker_id: format!("{}{i}", template.worker_id), ..template.clone() };
            self.tasks.spawn(run_worker(
                self.queue.clone(),
                handler.clone(),
                config,
                self.wake.clone(),
                self.shutdown.clone(),
            ));
        }
    }
}

/// Reads a TLS certificate and key (`what`: "DICOM TLS", "HTTPS") again on each SIGHUP
/// (certificate renewal without a restart); a file that does not load leaves the configuration in
/// use, with a warning.
pub(crate) async fn reload_on_hangup(
    what: &'static str,
    tls: Arc<firstread_tls::ServerTls>,
    shutdown: CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, what, "no SIGHUP handler: the TLS certificate is read at start only");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hangup.recv() => {
                if got.is_none() {
                    return;
                }
                match tls.reload() {
                    Ok(()) => info!(what, certificate = %tls.files().certificate.display(), "TLS certificate reloaded"),
                    Err(e) => warn!(what, error = %e, "TLS certificate not reloaded; the previous one stays in use"),
                }
            }
        }
    }
}

/// Promotes ready studies every `tick`, as soon as the next pending study is due (its stability
/// time, or the end of its early-readiness grace), and when `released` is notified (an
/// association ended); with the listen role, also heartbeats open associations.
async fn assemble(
    assembly: Assembly,
    config: crate::config::AssemblyConfig,
    heartbeat: bool,
    released: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut last_heartbeat = tokio::time::Instant::now();
    let mut failing = false;
    while !shutdown.is_cancelled() {
        let mut result = assembly.promote().await.map(|jobs| {
            for j in jobs {
                info!(
                    site = %j.site, study = %j.study_instance_uid, version = j.study_version, model = %j.model,
                    model_version = %j.model_version, shadow = j.shadow, "study ready: analysis queued"
                );
            }
        });
        if heartbeat && result.is_ok() && last_heartbeat.elapsed() >= config.heartbeat_interval {
            result = assembly.heartbeat().await.map(|_| ());
            last_heartbeat = tokio::time::Instant::now();
        }
        match (result, failing) {
            (Err(e), false) => {
                warn!(error = %e, "study assembly failing (database?); retrying");
                failing = true;
            }
            (Ok(()), true) => {
                info!("study assembly recovered");
                failing = false;
            }
            _ => {}
        }
        // wake at the next stability time or end of a grace when it comes before the next tick (a
        // few ms late, so the study is due when promotion runs)
        let stable = assembly.next_stable_in().await.ok().flatten();
        let early = assembly.next_early_in().await.ok().flatten();
        let next_due = stable.into_iter().chain(early).min();
        let pause = next_due.map_or(config.tick, |d| config.tick.min(d + std::time::Duration::from_millis(5)));
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = released.notified() => {}
        }
    }
}

/// Stored images waiting to be decoded ahead before new ones are left to the volume builder.
const PREFETCH_QUEUE: usize = 4096;

/// The fewest slices a series needs to be a candidate for early readiness: the smallest
/// `min_slices` of the models run (their volume contracts, from the manifests
/// `WorkerConfig::model_runs` read), else the volume builder's default.
fn early_min_slices(runs: &[crate::models::ModelRun]) -> usize {
    runs.iter()
        .filter_map(|r| r.manifest.as_ref().map(|m| m.input.min_slices))
        .min()
        .unwrap_or(firstread_volume::VolumeContract::default().min_slices)
}

/// A node id unique per process: host name, process id and a random suffix.
fn node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..6])
}
