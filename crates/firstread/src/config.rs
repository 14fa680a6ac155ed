//! Configuration: a TOML file (see `docs/firstread.example.toml`) with environment overrides
//! `FIRSTREAD_<SECTION>__<KEY>` (e.g. `FIRSTREAD_DIMSE__LISTEN=0.0.0.0:11112`,
//! `FIRSTREAD_DATABASE__URL=postgres://...`), layered with figment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use firstread_dimse::{AllowedPeer, ScpConfig};
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's DICOM identity.
    pub node: NodeConfig,
    /// The DIMSE listener (Store SCP).
    pub dimse: DimseConfig,
    /// Where instance files are kept.
    pub storage: StorageConfig,
    /// The PostgreSQL index and queue.
    pub database: DatabaseConfig,
    /// When a study is complete enough to analyse.
    pub assembly: AssemblyConfig,
    /// Analysis workers.
    pub worker: WorkerConfig,
    /// Where result objects are sent.
    pub export: ExportConfig,
    /// Who is told about which results (rules and channels: webhook, HL7 v2, FHIR).
    pub notify: firstread_notify::NotifyConfig,
    /// DICOMweb (STOW-RS, QIDO-RS, WADO-RS), health, metrics and the viewer over HTTP.
    pub http: firstread_dicomweb::HttpConfig,
    /// Log output.
    pub log: LogConfig,
    /// `[retention]`: what is purged, and when.
    pub retention: RetentionConfig,
    /// `[[peers]]`: the known DICOM peers, who may send (unless `dimse.unknown_peers = "accept"`,
    /// nobody else may) and who gets results back.
    pub peers: Vec<PeerConfig>,
}

/// One known DICOM peer (`[[peers]]`): a modality, a PACS, another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its AE title (as calling AE when it sends; as called AE when results go to it).
    pub ae_title: String,
    /// Its address. An IP address is also checked against the association's source address; a
    /// DNS name is only where results go.
    #[serde(default)]
    pub host: Option<String>,
    /// Its Store SCP's port, where results go.
    #[serde(default)]
    pub port: Option<u16>,
    /// Whether the results of the studies it sends go back to it (needs `host` and `port`).
    #[serde(default)]
    pub results: bool,
    /// Whether it receives every result, whoever sent the study (e.g. the PACS).
    #[serde(default)]
    pub always: bool,
    /// DICOM TLS when results go to it.
    #[serde(default)]
    pub tls: Option<firstread_dimse::ClientTlsFiles>,
    /// The site (hospital) it belongs to: the studies it sends are that site's, seen only by
    /// that site's users, and its results (`results`, `always`) are only that site's. Absent:
    /// the default site (`firstread_sites::DEFAULT`).
    #[serde(default)]
    pub site: Option<String>,
}

impl PeerConfig {
    /// Where its results go, when it takes results.
    ///
    /// # Errors
    /// A peer that takes results without a host and port.
    pub fn destination(&self) -> Result<Option<firstread_dimse::Destination>, String> {
        if !self.results && !self.always {
            return Ok(None);
        }
        match (&self.host, self.port) {
            (Some(host), Some(port)) => Ok(Some(firstread_dimse::Destination {
                ae_title: self.ae_title.clone(),
                host: host.clone(),
                port,
                tls: self.tls.clone(),
            })),
            _ => Err(format!("peer {}: results or always need host and port", self.ae_title)),
        }
    }
}

/// The site each sender's studies belong to ([`Config::peer_sites`]), and each destination's.
#[derive(Debug, Clone)]
pub struct PeerSites {
    by_ae: std::collections::HashMap<String, String>,
    unknown: String,
}

impl Default for PeerSites {
    /// No peer listed: everyone in the default site.
    fn default() -> Self {
        PeerSites { by_ae: std::collections::HashMap::new(), unknown: firstread_sites::DEFAULT.to_owned() }
    }
}

impl PeerSites {
    /// The site of the studies `calling_ae_title` sends.
    pub fn site_of(&self, calling_ae_title: &str) -> &str {
        self.by_ae.get(calling_ae_title).unwrap_or(&self.unknown)
    }
}

/// What happens to an association from a calling AE title that `[[peers]]` does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownPeers {
    /// A-ASSOCIATE-RJ permanent, reason 3 "calling AE title not recognized" (PS3.8 7.1.1.9).
    #[default]
    Refuse,
    /// Accepted (e.g. a test bench, or a node behind a router that only passes known senders).
    Accept,
}

/// This node's DICOM identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Our AE title (1-16 characters, PS3.5 6.2 AE).
    pub ae_title: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig { ae_title: "FIRSTREAD".into() }
    }
}

/// The DIMSE listeners.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DimseConfig {
    /// Address of the plain TCP listener (port 0: any free port).
    pub listen: SocketAddr,
    /// Whether the plain TCP listener runs. Off with `[dimse.tls]` set: DICOM TLS only.
    pub plain: bool,
    /// The DICOM TLS listener (PS3.15 B.9), beside the plain one unless `plain = false`.
    pub tls: Option<DimseTlsConfig>,
    /// Concurrent associations; beyond: A-ASSOCIATE-RJ transient, local limit exceeded.
    pub max_associations: usize,
    /// Silence after which an association is aborted (e.g. "60s").
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Maximum PDU length we advertise and accept, in bytes (>= 1018).
    pub max_pdu_length: u32,
    /// Calling AE titles that `[[peers]]` does not list: refused (default) or accepted.
    pub unknown_peers: UnknownPeers,
    /// The site whose studies those accepted from unknown calling AEs become.
    pub unknown_peers_site: String,
    /// Deprecated: list senders as `[[peers]]`. Calling AEs (optionally from these hosts) that may
    /// associate besides the peers.
    pub allowed_peers: Option<Vec<AllowedPeer>>,
    /// Private Storage SOP Class UIDs to accept in addition to the standard ones.
    pub extra_sop_classes: Vec<String>,
}

impl Default for DimseConfig {
    fn default() -> Self {
        let scp = ScpConfig::default();
        DimseConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 11112)),
            plain: true,
            tls: None,
            max_associations: scp.max_associations,
            idle_timeout: scp.idle_timeout,
            max_pdu_length: scp.max_pdu_length,
            unknown_peers: UnknownPeers::Refuse,
            unknown_peers_site: firstread_sites::DEFAULT.to_owned(),
            allowed_peers: None,
            extra_sop_classes: Vec::new(),
        }
    }
}

/// `[dimse.tls]`: the DICOM TLS listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimseTlsConfig {
    /// Address to listen on (2762 is the port IANA assigns to DICOM over TLS; 0: any free port).
    pub listen: SocketAddr,
    /// PEM certificate chain, this node's certificate first. Read again on SIGHUP.
    pub certificate: PathBuf,
    /// PEM private key of the certificate. Read again on SIGHUP.
    pub private_key: PathBuf,
    /// PEM CA certificates: when set, peers must present a certificate one of them issued.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

impl DimseTlsConfig {
    /// The files, as the Store SCP reads them.
    pub fn files(&self) -> firstread_tls::ServerTlsFiles {
        firstread_tls::ServerTlsFiles {
            certificate: self.certificate.clone(),
            private_key: self.private_key.clone(),
            client_ca: self.client_ca.clone(),
        }
    }
}

/// Instance file storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Storage root (instances under `studies/`, partial transfers under `incoming/`).
    pub root: PathBuf,
    /// fsync each instance and its directory before acknowledging it. Leave on in production.
    pub fsync: bool,
    /// The disk guard: at or above this usage of the storage filesystem (%), new associations
    /// get A-ASSOCIATE-RJ transient (local limit exceeded) and STOW-RS 503 with Retry-After.
    pub high_watermark_percent: f64,
    /// Below this usage (%), they are accepted again.
    pub low_watermark_percent: f64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            root: PathBuf::from("/var/lib/firstread"),
            fsync: true,
            high_watermark_percent: 90.0,
            low_watermark_percent: 85.0,
        }
    }
}

impl StorageConfig {
    /// The disk guard's watermarks.
    ///
    /// # Errors
    /// Watermarks not within 0 < low < high <= 100.
    pub fn watermarks(&self) -> Result<firstread_store::Watermarks, String> {
        let (high, low) = (self.high_watermark_percent, self.low_watermark_percent);
        if !(low > 0.0 && low < high && high <= 100.0) {
            return Err(format!(
                "storage: watermarks must be 0 < low_watermark_percent < high_watermark_percent <= 100 (got {low} and {high})"
            ));
        }
        Ok(firstread_store::Watermarks { high_pct: high, low_pct: low })
    }
}

/// PostgreSQL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Connection URL.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: "postgres://postgres@127.0.0.1:5432/firstread".into(), max_connections: 16 }
    }
}

/// Study assembly (see `docs/ARCHITECTURE.md`, "Study assembly").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssemblyConfig {
    /// A study is stable this long after its last instance (e.g. "5s").
    #[serde(with = "humantime_serde")]
    pub stable_after: Duration,
    /// Per calling AE title overrides of `stable_after` (e.g. a slow PACS: { PACS = "30s" }).
    #[serde(default)]
    pub stable_after_by_ae: std::collections::BTreeMap<String, HumanDuration>,
    /// An analysable instance after its study version was queued opens a new study version that
    /// is analysed again (true) or is only stored (false).
    pub reanalyse_late: bool,
    /// Make a study ready as soon as its senders released their associations (and opened no
    /// next one within `early_ready_grace`) and every series that can be analysed (axial original
    /// CT images, enough slices) is contiguous, instead of waiting for `stable_after`. Scouts,
    /// dose reports and other series neither block nor trigger it.
    pub early_ready: bool,
    /// How long early readiness waits after the release of the last association that delivered
    /// to a study for the same sender's next association (one association per series).
    #[serde(with = "humantime_serde")]
    pub early_ready_grace: Duration,
    /// A sender (calling AE title from one host) whose last this many studies each came over one
    /// association, and none of whose recent studies came over several, is not waited
    /// `early_ready_grace` for: it sends whole studies. 0: always wait the grace.
    pub early_ready_trust_after: u32,
    /// An open association whose node stopped heartbeating this long ago no longer holds its
    /// studies back (the node crashed).
    #[serde(with = "humantime_serde")]
    pub association_stale_after: Duration,
    /// How often a node heartbeats its open associations.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How often ready studies are looked for.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
}

/// Default `early_ready_grace` (ms): dcmtk `storescu` invoked back to back, one series each,
/// opens its next association well within it (see `docs/operations.md`).
pub const EARLY_READY_GRACE_MS: u64 = 500;

/// Default `early_ready_trust_after`: studies of a sender, each over one association, before
/// its studies are ready without the grace (see `docs/operations.md`).
pub const EARLY_READY_TRUST_AFTER: u32 = 3;

/// A duration written like "30s" in TOML.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct HumanDuration(#[serde(with = "humantime_serde")] pub Duration);

impl Default for AssemblyConfig {
    fn default() -> Self {
        AssemblyConfig {
            stable_after: Duration::from_secs(5),
            stable_after_by_ae: Default::default(),
            reanalyse_late: true,
            early_ready: true,
            early_ready_grace: Duration::from_millis(EARLY_READY_GRACE_MS),
            early_ready_trust_after: EARLY_READY_TRUST_AFTER,
            association_stale_after: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            tick: Duration::from_millis(200),
        }
    }
}

impl AssemblyConfig {
    /// `stable_after` for a calling AE title.
    pub fn stable_after_for(&self, calling_ae_title: &str) -> Duration {
        self.stable_after_by_ae.get(calling_ae_title).map(|d| d.0).unwrap_or(self.stable_after)
    }
}

/// Analysis workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// The active models, whose results are exported and notified: `NAME` (its highest installed
    /// version that is not a shadow) or `NAME@VERSION` (that version folder). Absent: every
    /// package under `models_dir`, each at its highest installed version that is not a shadow
    /// (`crate::models::plan`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Shadow model versions (`NAME@VERSION`): they analyse the same studies; their results are
    /// indexed with "SHADOW" in their series descriptions, never exported or notified.
    pub shadow: Vec<String>,
    /// Where model packages live: `<models_dir>/<name>/<version>/manifest.toml`.
    pub models_dir: PathBuf,
    /// Where the TorchScript runs: `"cpu"`, `"auto"` (default: a CUDA GPU when this build has
    /// CUDA and one is visible, else the CPU), `"cuda"` or `"cuda:N"` (a node whose build has no
    /// CUDA or that sees no such device refuses to start, saying why).
    #[serde(default)]
    pub device: firstread_inference::DeviceChoice,
    /// libtorch intra-op threads (0: libtorch's default, one per core).
    pub threads: usize,
    /// Concurrent jobs per process.
    pub concurrency: usize,
    /// Job lease; renewed every third of it while working.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Poll interval when no LISTEN/NOTIFY wake-up arrives.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Attempts before a job is dead.
    pub max_attempts: i32,
    /// Delay before the second attempt; doubles each attempt.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Upper bound of the retry delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Memory one analysis may take (MiB; 0: no budget beyond each model's `max_voxels`). A
    /// series that needs more (voxels x the model's `peak_bytes_per_voxel`) is no candidate,
    /// judged from its headers before it is loaded: a thinner series of the study is read, or the
    /// study is refused with the figures in the reason.
    pub memory_budget_mib: u64,
    /// Decoded slices held while studies arrive (MiB; 0: none). On a node that both listens and
    /// works, each stored image is decoded into HU on a thread of its own once its C-STORE-RSP
    /// is on its way, so that the volume is ready when the last slice lands
    /// (`firstread_volume::prefetch`); a 512 x 512 slice takes 1 MiB (default 320: a 300-slice
    /// study). Beyond it the oldest are dropped and read from their files again.
    pub prefetch_mib: u64,
    /// Testing aid: hold every job at least this long (to test crashes mid-job). Keep "0s".
    #[serde(with = "humantime_serde")]
    pub hold_for: Duration,
}

impl WorkerConfig {
    /// The model versions this node runs (active first, then shadows), checked against the
    /// packages installed in `models_dir` (`crate::models::plan`), with which studies each takes
    /// (`crate::models::read_manifests`).
    ///
    /// # Errors
    /// What is wrong, naming the folder (unknown model or version, a shadow also active, two
    /// active versions of one model, a manifest that does not load).
    pub fn model_runs(&self) -> Result<Vec<crate::models::ModelRun>, String> {
        let mut runs = crate::models::plan(&self.models_dir, self.models.as_deref(), &self.shadow)?;
        crate::models::read_manifests(&mut runs)?;
        Ok(runs)
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            models: None,
            shadow: Vec::new(),
            models_dir: PathBuf::from("models"),
            device: firstread_inference::DeviceChoice::Auto,
            threads: 0,
            concurrency: 1,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            max_attempts: 5,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            memory_budget_mib: 0,
            prefetch_mib: 320,
            hold_for: Duration::ZERO,
        }
    }
}

/// `[retention]`: received images of old studies are removed (the results, the audit trail and
/// an index stub stay); old job runs and association rows are pruned. Nothing is purged unless
/// `max_age` or `max_storage_bytes` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Studies whose last instance arrived longer ago than this lose their received images
    /// (e.g. "30days"); absent: no age limit.
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Beyond this many bytes of received images, the oldest studies lose theirs first.
    pub max_storage_bytes: Option<u64>,
    /// How often the housekeeping runs in a node with the work role.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Job runs and closed associations older than this are pruned.
    #[serde(with = "humantime_serde")]
    pub keep_runs: Duration,
}

impl RetentionConfig {
    /// Whether anything is ever purged: `max_age` or `max_storage_bytes` set.
    pub fn enabled(&self) -> bool {
        self.max_age.is_some() || self.max_storage_bytes.is_some()
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age: None,
            max_storage_bytes: None,
            interval: Duration::from_secs(3600),
            keep_runs: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Sending result objects (SR, SEG, SC) with C-STORE.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// Deprecated: list them as `[[peers]]` with `results = true`. A study's results go back to
    /// the AE that sent it (its calling AE title) when that AE is listed here.
    pub destinations: Vec<firstread_dimse::Destination>,
    /// Deprecated: `[[peers]]` with `always = true`. AE titles (from `destinations`) that receive
    /// every result, e.g. the PACS.
    pub always: Vec<String>,
    /// Attempts per export job before it is dead.
    pub max_attempts: i32,
    /// Delay before the second attempt; doubles each attempt.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Upper bound of the retry delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Concurrent export jobs per process.
    pub concurrency: usize,
    /// The site of each destination's AE title: its peer's, else that of unknown senders (the
    /// deprecated `destinations`); from [`Config::peer_sites`], not configured here.
    #[serde(skip)]
    pub sites: PeerSites,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            destinations: Vec::new(),
            always: Vec::new(),
            max_attempts: 8,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(600),
            concurrency: 1,
            sites: PeerSites::default(),
        }
    }
}

impl ExportConfig {
    /// The destinations for a study of `site` sent by `calling_ae_title`: the sender when known,
    /// then every `always` destination, without duplicates; only destinations of that site
    /// ([`ExportConfig::site_of`]), so no result leaves for another hospital.
    pub fn destinations_for(&self, site: &str, calling_ae_title: &str) -> Vec<&firstread_dimse::Destination> {
        let mut out: Vec<&firstread_dimse::Destination> = Vec::new();
        let wanted = std::iter::once(calling_ae_title).chain(self.always.iter().map(String::as_str));
        for ae in wanted {
            if self.site_of(ae) != site {
                continue;
            }
            if let Some(d) = self.destinations.iter().find(|d| d.ae_title == ae) {
                if !out.iter().any(|o| o.ae_title == d.ae_title) {
                    out.push(d);
                }
            }
        }
        out
    }

    /// The site of a destination's AE title ([`ExportConfig::sites`]).
    pub fn site_of(&self, ae_title: &str) -> &str {
        self.sites.site_of(ae_title)
    }

    /// A configured destination by AE title.
    pub fn destination(&self, ae_title: &str) -> Option<&firstread_dimse::Destination> {
        self.destinations.iter().find(|d| d.ae_title == ae_title)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for terminals.
    #[default]
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// `tracing` filter directive (`RUST_LOG` syntax), e.g. "info,firstread_dimse=debug".
    /// Patient names and IDs are only ever logged at debug level.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Pretty, filter: "info".into() }
    }
}

/// `url` with any password replaced by `***`, for messages.
pub fn redacted_url(url: &str) -> String {
    let authority = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[authority..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..end].rfind('@').and_then(|at| rest[..at].find(':').map(|colon| (colon, at))) {
        Some((colon, at)) => format!("{}{}:***{}", &url[..authority], &rest[..colon], &rest[at..]),
        None => url.to_owned(),
    }
}

/// What replaces a secret in [`Config::redacted`].
const REDACTED: &str = "<redacted>";

impl Config {
    /// This configuration without its secrets (HTTP token, webhook secrets, FHIR bearer tokens,
    /// the database password), for `firstread config` and logs.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        c.database.url = redacted_url(&c.database.url);
        if c.http.token.is_some() {
            c.http.token = Some(REDACTED.into());
        }
        c.notify.redact(REDACTED);
        c
    }

    /// Loads defaults, then the TOML file (if given), then `FIRSTREAD_*` environment variables.
    ///
    /// # Errors
    /// Unreadable file, unknown keys, wrong types.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(Box::new(figment::Error::from(format!("config file {} not found", file.display()))));
            }
            figment = figment.merge(Toml::file(file));
        }
        // only `FIRSTREAD_<SECTION>__<KEY>` names configuration: other FIRSTREAD_* variables
        // (FIRSTREAD_CONFIG for --config, the set-up script's FIRSTREAD_CACHE...) are not keys
        let env = Env::prefixed("FIRSTREAD_").filter(|k| k.as_str().contains("__")).split("__");
        figment.merge(env).extract().map_err(Box::new)
    }

    /// The calling AEs that may associate: `None` = any (`unknown_peers = "accept"` without the
    /// deprecated allow-list); else the peers (with their IP address where `host` is one) and the
    /// deprecated `dimse.allowed_peers` (which, when set, restricts even with "accept").
    pub fn allowed_peers(&self) -> Option<Vec<AllowedPeer>> {
        let legacy = self.dimse.allowed_peers.clone();
        if self.dimse.unknown_peers == UnknownPeers::Accept && legacy.is_none() {
            return None;
        }
        let peers = self.peers.iter().map(|p| AllowedPeer {
            ae_title: p.ae_title.clone(),
            host: p.host.as_deref().and_then(|h| h.parse().ok()),
        });
        Some(peers.chain(legacy.unwrap_or_default()).collect())
    }

    /// Where results go: `[export]` with the destinations and `always` of `[[peers]]` added.
    ///
    /// # Errors
    /// A peer that takes results without a host and port, or a bad site ([`Config::peer_sites`]).
    pub fn export(&self) -> Result<ExportConfig, String> {
        let mut export = self.export.clone();
        export.sites = self.peer_sites()?;
        for peer in &self.peers {
            if let Some(d) = peer.destination()? {
                export.destinations.retain(|e| e.ae_title != d.ae_title);
                export.destinations.push(d);
            }
            if peer.always && !export.always.contains(&peer.ae_title) {
                export.always.push(peer.ae_title.clone());
            }
        }
        Ok(export)
    }

    /// The site of each sender: `[[peers]] site`, the default site for peers without one, and
    /// `dimse.unknown_peers_site` for calling AEs not listed.
    ///
    /// # Errors
    /// A site name that cannot name a site (`firstread_sites::is_valid`), or one AE title listed
    /// in two sites (its studies would be filed under one of them, and the other hospital's
    /// users would see them).
    pub fn peer_sites(&self) -> Result<PeerSites, String> {
        let check = |site: &str, what: &str| {
            if firstread_sites::is_valid(site) {
                Ok(site.to_owned())
            } else {
                Err(format!("{what}: site {site:?} is not a site name ({})", firstread_sites::NAME_RULE))
            }
        };
        let mut by_ae: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        for p in &self.peers {
            let site = check(p.site.as_deref().unwrap_or(firstread_sites::DEFAULT), &format!("peer {}", p.ae_title))?;
            if let Some(other) = by_ae.get(&p.ae_title).filter(|other| **other != site) {
                return Err(format!(
                    "peer {} is listed in the sites {other} and {site}: an AE title belongs to one site (ask one \
                     hospital to give its device another AE title)",
                    p.ae_title
                ));
            }
            by_ae.insert(p.ae_title.clone(), site);
        }
        Ok(PeerSites { by_ae, unknown: check(&self.dimse.unknown_peers_site, "dimse.unknown_peers_site")? })
    }

    /// The sites this node serves: those of `[[peers]]`, and `dimse.unknown_peers_site` when
    /// unknown calling AEs are accepted.
    pub fn sites(&self) -> std::collections::BTreeSet<String> {
        let mut sites: std::collections::BTreeSet<String> =
            self.peers.iter().map(|p| p.site.clone().unwrap_or_else(|| firstread_sites::DEFAULT.to_owned())).collect();
        if self.dimse.unknown_peers == UnknownPeers::Accept || self.peers.is_empty() {
            sites.insert(self.dimse.unknown_peers_site.clone());
        }
        sites
    }

    /// What start checks of the sites: [`Config::peer_sites`], and on a node serving several
    /// sites, that every notification rule names the sites whose results it may send (a rule
    /// for every site would send one hospital's patients to another's systems).
    ///
    /// # Errors
    /// What is wrong, for the operator.
    pub fn check_sites(&self) -> Result<(), String> {
        self.peer_sites()?;
        let sites = self.sites();
        if sites.len() > 1 {
            let list = sites.iter().cloned().collect::<Vec<_>>().join(", ");
            if let Some(rule) = self.notify.rules.iter().find(|r| r.sites.is_empty()) {
                return Err(format!(
                    "notify rule {:?} has no `sites`, but this node serves several sites ({list}): name the sites \
                     whose results it may send",
                    rule.name
                ));
            }
        }
        Ok(())
    }

    /// The Store SCP settings.
    pub fn scp(&self) -> ScpConfig {
        ScpConfig {
            ae_title: self.node.ae_title.clone(),
            allowed_peers: self.allowed_peers(),
            max_associations: self.dimse.max_associations,
            idle_timeout: self.dimse.idle_timeout,
            max_pdu_length: self.dimse.max_pdu_length.max(1018),
            extra_sop_classes: self.dimse.extra_sop_classes.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_env_overrides_it() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/firstread.example.toml");
        figment::Jail::expect_with(|jail| {
            jail.set_env("FIRSTREAD_DIMSE__LISTEN", "127.0.0.1:4000");
            jail.set_env("FIRSTREAD_NODE__AE_TITLE", "OTHER");
            let c = Config::load(Some(&example)).map_err(|e| e.to_string())?;
            assert_eq!(c.dimse.listen, "127.0.0.1:4000".parse().unwrap());
            assert_eq!(c.node.ae_title, "OTHER");
            assert_eq!(c.dimse.idle_timeout, Duration::from_secs(60));
            assert!(c.storage.fsync);
            assert_eq!(c.http.listen, "0.0.0.0:8080".parse().unwrap());
            assert_eq!(c.http.auth, firstread_dicomweb::AuthMode::Bearer);
            Ok(())
        });
    }

    #[test]
    fn other_firstread_variables_are_not_configuration() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("FIRSTREAD_CONFIG", "/nowhere.toml");
            jail.set_env("FIRSTREAD_TEST_PG", "postgres://x@y/z");
            jail.set_env("FIRSTREAD_CACHE", "/tmp");
            jail.set_env("FIRSTREAD_DATABASE__URL", "postgres://a@b/c");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.database.url, "postgres://a@b/c");
            Ok(())
        });
    }

    #[test]
    fn peers_say_who_may_send_and_who_gets_results() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "peers.toml",
                "[[peers]]\nae_title = \"CT1\"\nhost = \"10.1.2.3\"\nport = 104\nresults = true\n\
                 [[peers]]\nae_title = \"PACS\"\nhost = \"pacs.example\"\nport = 11112\nalways = true\n\
                 [[peers]]\nae_title = \"CT2\"\n",
            )?;
            let c = Config::load(Some(Path::new("peers.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.dimse.unknown_peers, UnknownPeers::Refuse);
            let allowed = c.allowed_peers().expect("an allow-list");
            let titles: Vec<(&str, Option<std::net::IpAddr>)> =
                allowed.iter().map(|p| (p.ae_title.as_str(), p.host)).collect();
            assert_eq!(
                titles,
                [("CT1", Some("10.1.2.3".parse().unwrap())), ("PACS", None), ("CT2", None)],
                "an IP address is checked, a DNS name is not"
            );
            let export = c.export()?;
            let dests: Vec<String> = export.destinations.iter().map(ToString::to_string).collect();
            assert_eq!(dests, ["CT1@10.1.2.3:104", "PACS@pacs.example:11112"]);
            assert_eq!(export.always, ["PACS"]);
            assert_eq!(
                export.destinations_for("default", "CT1").iter().map(|d| d.ae_title.as_str()).collect::<Vec<_>>(),
                ["CT1", "PACS"]
            );
            assert_eq!(
                export.destinations_for("default", "CT2").iter().map(|d| d.ae_title.as_str()).collect::<Vec<_>>(),
                ["PACS"]
            );
            let sites = c.peer_sites()?;
            assert_eq!((sites.site_of("CT1"), sites.site_of("NOBODY")), ("default", "default"));
            // accept: anyone; results still go where the peers say
            jail.set_env("FIRSTREAD_DIMSE__UNKNOWN_PEERS", "accept");
            let c = Config::load(Some(Path::new("peers.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.allowed_peers(), None);
            // a peer that takes results needs an address
            jail.create_file("bad.toml", "[[peers]]\nae_title = \"CT1\"\nresults = true\n")?;
            let c = Config::load(Some(Path::new("bad.toml"))).map_err(|e| e.to_string())?;
            assert!(c.export().is_err());
            // nobody listed: everyone refused
            assert_eq!(Config::default().allowed_peers(), Some(Vec::new()));
            Ok(())
        });
    }

    #[test]
    fn sites_keep_results_at_home() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "sites.toml",
                "[dimse]\nunknown_peers = \"accept\"\nunknown_peers_site = \"guests\"\n\
                 [[peers]]\nae_title = \"CT_A\"\nhost = \"10.1.0.1\"\nport = 104\nresults = true\nsite = \"st-anne\"\n\
                 [[peers]]\nae_title = \"PACS_A\"\nhost = \"10.1.0.2\"\nport = 104\nalways = true\nsite = \"st-anne\"\n\
                 [[peers]]\nae_title = \"CT_B\"\nhost = \"10.2.0.1\"\nport = 104\nresults = true\nsite = \"chu-b\"\n\
                 [[peers]]\nae_title = \"PACS_B\"\nhost = \"10.2.0.2\"\nport = 104\nalways = true\nsite = \"chu-b\"\n",
            )?;
            let c = Config::load(Some(Path::new("sites.toml"))).map_err(|e| e.to_string())?;
            let sites = c.peer_sites()?;
            assert_eq!(
                [sites.site_of("CT_A"), sites.site_of("CT_B"), sites.site_of("OTHER")],
                ["st-anne", "chu-b", "guests"]
            );
            let export = c.export()?;
            let to = |site: &str, ae: &str| -> Vec<String> {
                export.destinations_for(site, ae).iter().map(|d| d.ae_title.clone()).collect()
            };
            assert_eq!(to("st-anne", "CT_A"), ["CT_A", "PACS_A"]);
            assert_eq!(to("chu-b", "CT_B"), ["CT_B", "PACS_B"]);
            // never another site's PACS, even for a sender listed there
            assert_eq!(to("chu-b", "CT_A"), ["PACS_B"]);
            assert!(to("guests", "OTHER").is_empty());
            jail.create_file("bad.toml", "[[peers]]\nae_title = \"CT1\"\nsite = \"../x\"\n")?;
            let c = Config::load(Some(Path::new("bad.toml"))).map_err(|e| e.to_string())?;
            assert!(c.peer_sites().is_err());
            // one AE title in two sites: refused at start
            jail.create_file(
                "twice.toml",
                "[[peers]]\nae_title = \"CT1\"\nsite = \"a\"\n[[peers]]\nae_title = \"CT1\"\nsite = \"b\"\n",
            )?;
            let c = Config::load(Some(Path::new("twice.toml"))).map_err(|e| e.to_string())?;
            assert!(c.check_sites().is_err_and(|e| e.contains("CT1")));
            // a notification rule for every site on a node of several: refused at start
            let c = Config::load(Some(Path::new("sites.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.sites().into_iter().collect::<Vec<_>>(), ["chu-b", "guests", "st-anne"]);
            assert_eq!(c.check_sites(), Ok(()));
            let mut rule: firstread_notify::config::Rule =
                toml::from_str("name = \"all\"\nchannels = [\"c\"]").map_err(|e| e.to_string())?;
            let mut with_rule = c.clone();
            with_rule.notify.rules = vec![rule.clone()];
            assert!(with_rule.check_sites().is_err_and(|e| e.contains("\"all\"")));
            rule.sites = vec!["st-anne".into()];
            with_rule.notify.rules = vec![rule];
            assert_eq!(with_rule.check_sites(), Ok(()));
            // the deprecated destinations that are no peer belong to the unknown senders' site
            assert_eq!(c.export()?.site_of("SOMEONE"), "guests");
            Ok(())
        });
    }

    /// A manifest that loads (each run's `[takes]` is read from it).
    const MANIFEST: &str = include_str!("../../../models/emphysema-ct/0.1.0/manifest.toml");

    #[test]
    fn models_old_and_new_configurations() {
        figment::Jail::expect_with(|jail| {
            for version in ["0.1.0", "0.2.1", "0.10.0", "0.9.0"] {
                let dir = jail.directory().join("models/covid19-lung-ct").join(version);
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                std::fs::write(dir.join("manifest.toml"), MANIFEST).map_err(|e| e.to_string())?;
            }
            let runs = |c: &Config| -> Result<Vec<String>, String> {
                Ok(c.worker
                    .model_runs()?
                    .iter()
                    .map(|r| {
                        format!("{}@{}{}", r.model.name, r.model.version, if r.model.shadow { " shadow" } else { "" })
                    })
                    .collect())
            };
            // nothing said: every package at its highest version, numerically
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.worker.models, None);
            assert_eq!(runs(&c)?, ["covid19-lung-ct@0.10.0"]);
            // a configuration of before versions: the model at its active version
            jail.create_file("old.toml", "[worker]\nmodels = [\"covid19-lung-ct\"]\n")?;
            let c = Config::load(Some(Path::new("old.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(runs(&c)?, ["covid19-lung-ct@0.10.0"]);
            // a pin and a shadow, from the file and from the environment
            jail.create_file(
                "pinned.toml",
                "[worker]\nmodels = [\"covid19-lung-ct@0.2.1\"]\nshadow = [\"covid19-lung-ct@0.1.0\"]\n",
            )?;
            let c = Config::load(Some(Path::new("pinned.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(runs(&c)?, ["covid19-lung-ct@0.2.1", "covid19-lung-ct@0.1.0 shadow"]);
            jail.set_env("FIRSTREAD_WORKER__SHADOW", "[\"covid19-lung-ct@0.10.0\"]");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(runs(&c)?, ["covid19-lung-ct@0.9.0", "covid19-lung-ct@0.10.0 shadow"]);
            // a shadow that is also active, an unknown version: refused naming the folder
            let c = Config::load(Some(Path::new("pinned.toml"))).map_err(|e| e.to_string())?;
            let mut both = c.clone();
            both.worker.shadow = vec!["covid19-lung-ct@0.2.1".into()];
            assert!(runs(&both).is_err_and(|e| e.contains("both active") && e.contains("covid19-lung-ct/0.2.1")));
            let mut unknown = c;
            unknown.worker.models = Some(vec!["covid19-lung-ct@0.3.0".into()]);
            assert!(runs(&unknown).is_err_and(|e| e.contains("models/covid19-lung-ct/0.3.0")));
            // printed back: no models key when none was set
            let printed = toml::to_string_pretty(&Config::default()).map_err(|e| e.to_string())?;
            assert!(printed.contains("shadow = []") && !printed.contains("models = "), "{printed}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[dimse]\nlisten_port = 4\n")?;
            assert!(Config::load(Some(Path::new("bad.toml"))).is_err());
            Ok(())
        });
    }
}
