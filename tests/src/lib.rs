//! Test harness for firstread's integration tests: each test gets its own PostgreSQL database
//! (created, migrated, dropped), its own storage folder and a node on port 0, so tests run in
//! parallel. Real peers: dcmtk (by absolute path, since pynetdicom installs same-named
//! scripts), pynetdicom scripts in `tests/peers/`, and dicom-ul clients for crafted traffic.

pub mod grid;
pub mod inserted;
pub mod phantom;
pub mod pki;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use firstread::{Config, Node, Roles};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

/// Admin URL of the local PostgreSQL (override with FIRSTREAD_TEST_PG).
pub fn admin_url() -> String {
    std::env::var("FIRSTREAD_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A uniquely named database, dropped when the value is dropped.
pub struct TestDb {
    /// Connection URL of the database.
    pub url: String,
    name: String,
}

impl TestDb {
    /// Creates an empty database named `firstread_test_<random>`.
    pub async fn create() -> TestDb {
        let name = format!("firstread_test_{}", uuid::Uuid::new_v4().simple());
        let admin = PgPoolOptions::new().max_connections(1).connect(&admin_url()).await.expect("PostgreSQL reachable");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create database");
        admin.close().await;
        let base = admin_url();
        let url = format!("{}/{name}", base.rsplit_once('/').map(|(b, _)| b).unwrap_or(&base));
        TestDb { url, name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside or outside a runtime: use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(admin) = PgPoolOptions::new().max_connections(1).connect(&admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await;
                }
            });
        })
        .join();
    }
}

/// A node started for one test.
pub struct TestNode {
    /// The running node.
    pub node: Node,
    /// Its configuration.
    pub config: Config,
    /// Storage root (deleted on drop).
    pub dir: tempfile::TempDir,
    /// Its database (dropped on drop, after the node).
    pub db: TestDb,
    /// A pool on the test database for assertions.
    pub pool: PgPool,
}

impl TestNode {
    /// Starts a node on 127.0.0.1:0 with its own database and storage; `customize` may change
    /// the configuration first.
    pub async fn start(customize: impl FnOnce(&mut Config)) -> TestNode {
        Self::start_roles(Roles::ALL, customize).await
    }

    /// As [`TestNode::start`], running only `roles`.
    pub async fn start_roles(roles: Roles, customize: impl FnOnce(&mut Config)) -> TestNode {
        let db = TestDb::create().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.dimse.listen = "127.0.0.1:0".parse().expect("addr");
        config.storage.root = dir.path().to_path_buf();
        config.database.url = db.url.clone();
        config.database.max_connections = 8;
        // the disk guard judges the host's disk, which the tests do not control (tests/disk.rs
        // sets its own watermarks on a filesystem it makes): refuse only when it is full
        config.storage.high_watermark_percent = 100.0;
        config.storage.low_watermark_percent = 99.0;
        config.dimse.idle_timeout = Duration::from_secs(20);
        config.worker.poll_interval = Duration::from_millis(200);
        config.worker.models_dir = repo_root().join("models");
        // one model: the tests count its result objects (tests/emphysema.rs runs every package)
        config.worker.models = Some(vec![COVID_MODEL.into()]);
        config.log.filter = "warn".into();
        config.http.listen = "127.0.0.1:0".parse().expect("addr");
        config.http.token = Some(TEST_TOKEN.into());
        config.http.viewer_dir = Some(repo_root().join(".viewer/node_modules/@ohif/app/dist"));
        // tests send from many AE titles; the ones about the peer registry set it back to refuse
        config.dimse.unknown_peers = firstread::config::UnknownPeers::Accept;
        customize(&mut config);
        firstread::telemetry::init(&config.log);
        let node = Node::start(&config, roles).await.expect("node starts");
        let pool = PgPoolOptions::new().max_connections(2).connect(&db.url).await.expect("test pool");
        TestNode { node, config, dir, db, pool }
    }

    /// The DIMSE address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.node.dimse_addr.expect("listen role")
    }

    /// The DICOMweb root URL, e.g. `http://127.0.0.1:PORT/dicom-web`.
    pub fn dicomweb(&self) -> String {
        format!("http://{}/dicom-web", self.node.http_addr.expect("HTTP enabled"))
    }

    /// The DIMSE port.
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// `count(*)` of a table or query.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query(sql).fetch_one(&self.pool).await.expect("count query").get::<i64, _>(0)
    }

    /// The export jobs of the first read's result set, by part ("objects", then "sr"): (part,
    /// state, attempts, last error). A read is exported in two parts to each destination: the SR
    /// as soon as it is written, the other objects once they are.
    pub async fn export_jobs(&self) -> Vec<(String, String, i32, Option<String>)> {
        sqlx::query_as("SELECT part, state, attempts, last_error FROM jobs WHERE kind = 'export' ORDER BY part, id")
            .fetch_all(&self.pool)
            .await
            .expect("export jobs")
    }

    /// Whether both export parts of the first read exist and are in `state`.
    pub async fn exports_are(&self, state: &str) -> bool {
        let jobs = self.export_jobs().await;
        jobs.len() == 2 && jobs.iter().all(|j| j.1 == state)
    }

    /// Instance files under the storage root's `studies/`.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        files_under(&self.dir.path().join("studies"))
    }

    /// Partial transfers left in `incoming/` (the per-process lock files are not counted).
    pub fn incoming_files(&self) -> Vec<PathBuf> {
        incoming_parts(self.dir.path())
    }
}

/// The partial instance files (`*.part`) under `<root>/incoming`.
pub fn incoming_parts(root: &Path) -> Vec<PathBuf> {
    files_under(&root.join("incoming")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "part")).collect()
}

/// Every regular file under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The repository root.
/// Notifies every read to a webhook receiver at `127.0.0.1:<port>/hooks/firstread`, signed with
/// A notification channel named `name` of `kind`, receiving application "RIS" at "HOSPITAL",
/// 5 s timeout, everything else unset (the tests set the address, URL or secret they need).
pub fn channel(name: &str, kind: firstread_notify::ChannelKind) -> firstread_notify::Channel {
    firstread_notify::Channel {
        name: name.into(),
        kind,
        url: None,
        address: None,
        secret: None,
        secret_file: None,
        bearer_token: None,
        receiving_application: "RIS".into(),
        receiving_facility: "HOSPITAL".into(),
        timeout: Duration::from_secs(5),
    }
}

/// `secret` (channel "ward", rule "every-read").
pub fn webhook_every_read(c: &mut Config, port: u16, secret: &str) {
    use firstread_notify::{Channel, ChannelKind, Rule};
    c.notify.channels = vec![Channel {
        url: Some(format!("http://127.0.0.1:{port}/hooks/firstread")),
        secret: Some(secret.into()),
        ..channel("ward", ChannelKind::Webhook)
    }];
    c.notify.rules = vec![Rule { name: "every-read".into(), channels: vec!["ward".into()], ..Rule::default() }];
}

/// The model the node tests run (every installed package runs by default).
pub const COVID_MODEL: &str = "covid19-lung-ct";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// The `.dcm` files of `data/ct/<series>` (e.g. "lung-dx-a0002-b70f"), sorted.
pub fn series_files(series: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join(format!("data/ct/{series}")))
        .expect("sample CT present")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    files
}

/// The bundled sample CT series (30 slices) in one of its encodings:
/// "" (Explicit VR LE), "-j2k", "-jpegll", "-jpegls".
pub fn sample_series(variant: &str) -> Vec<PathBuf> {
    let dir = repo_root().join(format!("data/ct/lung-dx-a0002-b40f{variant}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("sample CT present")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("1-") && n.ends_with(".dcm")))
        .collect();
    files.sort();
    files
}

/// A dcmtk tool by absolute path (pynetdicom installs scripts with the same names).
pub fn dcmtk(tool: &str) -> Command {
    let path = Path::new("/usr/bin").join(tool);
    let mut c = Command::new(if path.exists() { path } else { PathBuf::from(tool) });
    // dcmtk leaves Nagle on unless told; without it every message waits for a delayed ACK.
    c.env("TCP_NODELAY", "1");
    c
}

/// Runs a command, returning its output (stdout+stderr kept separately).
pub fn run(mut cmd: Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Runs `tests/peers/peer.py` with arguments and parses its JSON output.
pub fn peer(args: &[&str]) -> serde_json::Value {
    let out = run({
        let mut c = Command::new("python3");
        c.arg(repo_root().join("tests/peers/peer.py")).args(args);
        c
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("peer.py {args:?} printed no JSON ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    })
}

/// A Part 10 file split into its File Meta Information and data set bytes.
pub struct Part10 {
    /// Transfer Syntax UID (0002,0010).
    pub transfer_syntax_uid: String,
    /// Media Storage SOP Class UID.
    pub sop_class_uid: String,
    /// Media Storage SOP Instance UID.
    pub sop_instance_uid: String,
    /// The data set bytes after the meta group, as a C-STORE sends them.
    pub dataset: Vec<u8>,
}

/// Reads a Part 10 file and splits off its data set bytes (PS3.10 7.1).
pub fn read_part10(path: &Path) -> Part10 {
    let bytes = std::fs::read(path).expect("read file");
    assert_eq!(&bytes[128..132], b"DICM", "{} is not Part 10", path.display());
    // (0002,0000) UL, explicit VR LE: tag 4 + VR 2 + length 2 + value 4
    let group_len = u32::from_le_bytes([bytes[140], bytes[141], bytes[142], bytes[143]]) as usize;
    let end = 144 + group_len;
    let meta = dicom_object::FileMetaTable::from_reader(&bytes[128..end]).expect("meta");
    Part10 {
        transfer_syntax_uid: meta.transfer_syntax().trim_end_matches('\0').to_owned(),
        sop_class_uid: meta.media_storage_sop_class_uid().trim_end_matches('\0').to_owned(),
        sop_instance_uid: meta.media_storage_sop_instance_uid().trim_end_matches('\0').to_owned(),
        dataset: bytes[end..].to_vec(),
    }
}

/// A hand-driven SCU on dicom-ul, for traffic real tools will not produce (aborts mid-instance,
/// mismatched UIDs, garbage data sets).
pub struct RawScu {
    association: dicom_ul::association::AsyncClientAssociation<tokio::net::TcpStream>,
}

impl RawScu {
    /// Associates with `addr` proposing one context per (abstract syntax, transfer syntax).
    pub async fn connect(
        addr: std::net::SocketAddr,
        called: &str,
        contexts: &[(&str, &str)],
    ) -> anyhow::Result<RawScu> {
        let mut options = dicom_ul::ClientAssociationOptions::new().calling_ae_title("RAWSCU").called_ae_title(called);
        for (abstract_syntax, ts) in contexts {
            options = options.with_presentation_context(*abstract_syntax, vec![*ts]);
        }
        let association = options.establish_async(addr).await?;
        Ok(RawScu { association })
    }

    /// The accepted presentation context id for an abstract syntax.
    pub fn context_id(&self, abstract_syntax: &str) -> u8 {
        self.association
            .presentation_contexts()
            .iter()
            .find(|pc| pc.abstract_syntax == abstract_syntax)
            .map(|pc| pc.id)
            .expect("context accepted")
    }

    /// Sends a C-STORE-RQ command set.
    pub async fn send_command(&mut self, context_id: u8, message_id: u16, sop_class: &str, sop_instance: &str) {
        let data = firstread_dimse::command::encode_store_request(message_id, sop_class, sop_instance);
        self.send_pdv(context_id, dicom_ul::pdu::PDataValueType::Command, data, true).await;
    }

    /// Sends data set bytes as data PDVs of at most `chunk` bytes; `last` marks the final one.
    pub async fn send_data(&mut self, context_id: u8, bytes: &[u8], chunk: usize, last: bool) {
        let n = bytes.chunks(chunk).count();
        for (i, c) in bytes.chunks(chunk).enumerate() {
            self.send_pdv(context_id, dicom_ul::pdu::PDataValueType::Data, c.to_vec(), last && i + 1 == n).await;
        }
    }

    async fn send_pdv(
        &mut self,
        context_id: u8,
        value_type: dicom_ul::pdu::PDataValueType,
        data: Vec<u8>,
        is_last: bool,
    ) {
        let pdu = dicom_ul::Pdu::PData {
            data: vec![dicom_ul::pdu::PDataValue { presentation_context_id: context_id, value_type, is_last, data }],
        };
        self.association.send(&pdu).await.expect("send P-DATA-TF");
    }

    /// Receives the next response and returns its Status (0000,0900) and Error Comment.
    pub async fn receive_status(&mut self) -> (u16, Option<String>) {
        use dicom_dictionary_std::tags;
        let pdu = self.association.receive().await.expect("response");
        let dicom_ul::Pdu::PData { data } = pdu else { panic!("expected P-DATA-TF, got {pdu:?}") };
        let bytes: Vec<u8> = data.into_iter().flat_map(|p| p.data).collect();
        let obj = dicom_object::InMemDicomObject::read_dataset_with_ts(
            &bytes[..],
            &dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .expect("response command set");
        let status = obj.get(tags::STATUS).expect("status").to_int::<u16>().expect("status value");
        let comment = obj.get(tags::ERROR_COMMENT).and_then(|e| e.to_str().ok()).map(|s| s.trim().to_owned());
        (status, comment)
    }

    /// Sends a whole instance and returns the response status.
    pub async fn store(
        &mut self,
        message_id: u16,
        sop_class: &str,
        sop_instance: &str,
        dataset: &[u8],
    ) -> (u16, Option<String>) {
        let pc = self.context_id(sop_class);
        self.send_command(pc, message_id, sop_class, sop_instance).await;
        self.send_data(pc, dataset, 16 * 1024, true).await;
        self.receive_status().await
    }

    /// Sends A-ABORT.
    pub async fn abort(self) {
        let _ = self.association.abort().await;
    }

    /// Releases the association.
    pub async fn release(self) {
        let _ = self.association.release().await;
    }

    /// Closes the TCP connection without A-RELEASE or A-ABORT.
    pub fn drop_connection(self) {
        drop(self.association);
    }
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes; returns the last result.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A small synthetic CT instance (4x4 pixels) of `study`/`series` at slice position `z` (mm), as
/// Explicit VR LE data set bytes: for queue tests that need many studies, not real pixels.
pub fn tiny_ct(study: &str, series: &str, sop: &str, z: f64) -> Vec<u8> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let mut obj = dicom_object::InMemDicomObject::new_empty();
    let mut put = |tag, vr, value: PrimitiveValue| obj.put(DataElement::new(tag, vr, value));
    put(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2".into());
    put(tags::SOP_INSTANCE_UID, VR::UI, sop.into());
    put(tags::STUDY_INSTANCE_UID, VR::UI, study.into());
    put(tags::SERIES_INSTANCE_UID, VR::UI, series.into());
    put(tags::MODALITY, VR::CS, "CT".into());
    put(tags::PATIENT_ID, VR::LO, "TINY".into());
    put(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL".into());
    put(tags::IMAGE_POSITION_PATIENT, VR::DS, format!("0\\0\\{z}").into());
    put(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0".into());
    put(tags::ROWS, VR::US, PrimitiveValue::from(4u16));
    put(tags::COLUMNS, VR::US, PrimitiveValue::from(4u16));
    put(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(vec![0u8; 32]));
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .expect("encode tiny CT");
    out
}

/// Sends `slices` tiny CT instances of one series over one association; returns when all were
/// acknowledged with Success.
pub async fn send_tiny_series(
    addr: std::net::SocketAddr,
    study: &str,
    series: &str,
    slices: impl IntoIterator<Item = u32>,
) {
    let ct = "1.2.840.10008.5.1.4.1.1.2";
    let mut scu = RawScu::connect(addr, "FIRSTREAD", &[(ct, "1.2.840.10008.1.2.1")]).await.expect("associate");
    for i in slices {
        let sop = format!("{series}.{i}");
        let (status, comment) =
            scu.store(i as u16 + 1, ct, &sop, &tiny_ct(study, series, &sop, f64::from(i) * 2.0)).await;
        assert_eq!(status, 0, "{comment:?}");
    }
    scu.release().await;
}

/// The `firstread` binary, built once per test process (`cargo build -p firstread`).
pub fn firstread_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "firstread", "--bin", "firstread"])
            .current_dir(repo_root())
            .status()
            .expect("cargo build");
        assert!(status.success(), "building firstread failed");
        // target/<profile>/deps/<test exe> -> target/<profile>/firstread
        let exe = std::env::current_exe().expect("test exe");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
        profile_dir.join("firstread")
    })
    .clone()
}

/// A `firstread` process (killed with SIGKILL when dropped).
pub struct Process {
    /// The child.
    pub child: std::process::Child,
}

impl Process {
    /// Starts `firstread <args>` with environment overrides (`FIRSTREAD_*`).
    pub fn start(args: &[&str], env: &[(&str, String)]) -> Process {
        let mut cmd = Command::new(firstread_bin());
        cmd.args(args).env("FIRSTREAD_LOG__FILTER", "warn,firstread=info").stdout(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Process { child: cmd.spawn().expect("spawn firstread") }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Environment for a `firstread` process on `db`/`root` listening on 127.0.0.1:`port`.
pub fn node_env(db: &TestDb, root: &Path, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("FIRSTREAD_DATABASE__URL", db.url.clone()),
        ("FIRSTREAD_STORAGE__ROOT", root.display().to_string()),
        ("FIRSTREAD_DIMSE__LISTEN", format!("127.0.0.1:{port}")),
        ("FIRSTREAD_WORKER__POLL_INTERVAL", "200ms".into()),
        ("FIRSTREAD_WORKER__MODELS_DIR", repo_root().join("models").display().to_string()),
        // one model: the tests count its result objects (tests/emphysema.rs runs every package)
        ("FIRSTREAD_WORKER__MODELS", format!("[\"{COVID_MODEL}\"]")),
        // HTTP on a port of its own (tests that use it set FIRSTREAD_HTTP__LISTEN themselves)
        ("FIRSTREAD_HTTP__LISTEN", "127.0.0.1:0".into()),
        ("FIRSTREAD_HTTP__TOKEN", TEST_TOKEN.into()),
        ("FIRSTREAD_DIMSE__UNKNOWN_PEERS", "accept".into()),
        // the host's disk is not the test's (see TestNode)
        ("FIRSTREAD_STORAGE__HIGH_WATERMARK_PERCENT", "100".into()),
        ("FIRSTREAD_STORAGE__LOW_WATERMARK_PERCENT", "99".into()),
    ]
}

/// The bearer token test nodes require on HTTP.
pub const TEST_TOKEN: &str = "firstread-test-token";

/// A free TCP port on 127.0.0.1 (for subprocess nodes, which cannot report port 0 back).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Polls an async condition every 100 ms until true or `timeout`.
pub async fn eventually_async<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A peer process (storescp, Orthanc), killed when dropped.
pub struct Peer(pub std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A notification receiver of `tests/peers/receivers.py` (`webhook`, `hl7` or `fhir`) on
/// 127.0.0.1:`port`, appending what it receives to `out` as JSON lines.
pub fn receiver(kind: &str, port: u16, out: &Path, extra: &[&str]) -> Peer {
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("tests/peers/receivers.py"))
        .args([kind, "--port", &port.to_string(), "--out"])
        .arg(out)
        .args(extra)
        .stdout(std::process::Stdio::null());
    let peer = Peer(cmd.spawn().expect("receivers.py"));
    wait_listening(port, kind);
    peer
}

/// The JSON lines a receiver wrote so far.
pub fn received(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port` (30 s at most).
pub fn wait_listening(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{what} listening on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// dcmtk storescp as AE MODALITY writing into `dir`, one file per received object (`-uf`: a
/// second copy of an instance would be a second file).
pub fn storescp(port: u16, dir: &Path) -> Peer {
    let mut cmd = dcmtk("storescp");
    cmd.args(["-aet", "MODALITY", "-uf", "-od"])
        .arg(dir)
        .args(["+xa", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let peer = Peer(cmd.spawn().expect("storescp"));
    wait_listening(port, "storescp");
    peer
}

/// Where a node's results go in the model-version tests: a dcmtk storescp (AE MODALITY) writing
/// into `received_dir` and a webhook receiver (HMAC secret "s3cret") appending to `hook_out`, in
/// a temporary folder; stopped when dropped. [`ResultPeers::wire`] points a node at both.
pub struct ResultPeers {
    /// Files the storescp received.
    pub received_dir: PathBuf,
    /// The webhook receiver's JSON lines ([`received`]).
    pub hook_out: PathBuf,
    scp_port: u16,
    hook_port: u16,
    _scp: Peer,
    _hook: Peer,
    _dir: tempfile::TempDir,
}

impl ResultPeers {
    /// Starts both peers on free ports.
    pub fn start() -> ResultPeers {
        let dir = tempfile::tempdir().expect("dir");
        let received_dir = dir.path().join("received");
        std::fs::create_dir_all(&received_dir).expect("dir");
        let (scp_port, hook_port) = (free_port(), free_port());
        let _scp = storescp(scp_port, &received_dir);
        let hook_out = dir.path().join("hook");
        let _hook = receiver("webhook", hook_port, &hook_out, &["--secret", "s3cret"]);
        ResultPeers { received_dir, hook_out, scp_port, hook_port, _scp, _hook, _dir: dir }
    }

    /// The storescp as the node's only export destination, every read notified to the webhook.
    pub fn wire(&self, c: &mut Config) {
        c.export.destinations = vec![firstread_dimse::Destination {
            ae_title: "MODALITY".into(),
            host: "127.0.0.1".into(),
            port: self.scp_port,
            tls: None,
        }];
        webhook_every_read(c, self.hook_port, "s3cret");
    }
}

/// A real Orthanc (AE ORTHANC, Debian package `orthanc`) on loopback ports with its storage in
/// `dir`.
pub fn orthanc(dir: &Path, dicom_port: u16, http_port: u16) -> Peer {
    let config = serde_json::json!({
        "Name": "firstread-test",
        "StorageDirectory": dir.join("storage"),
        "IndexDirectory": dir.join("index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": false,
        "AuthenticationEnabled": false,
        "DicomCheckCalledAet": false,
        "Plugins": [],
        "StableAge": 1,
    });
    let path = dir.join("orthanc.json");
    std::fs::write(&path, config.to_string()).expect("orthanc config");
    let mut cmd = Command::new("/usr/sbin/Orthanc");
    cmd.arg(&path).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let peer = Peer(cmd.spawn().expect("Orthanc (Debian package orthanc)"));
    wait_listening(dicom_port, "Orthanc DICOM");
    wait_listening(http_port, "Orthanc HTTP");
    peer
}

/// GET on Orthanc's REST API (HTTP/1.0 on loopback; no client crate needed).
pub fn orthanc_get(http_port: u16, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http_port)).expect("connect Orthanc");
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("response");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("Orthanc {path}: {e}: {response}"))
}

/// `firstread serve` as a subprocess on `db`/`root` with DICOM and HTTP on free loopback ports
/// and `stable_after` 1 s; returns the process, the DIMSE port and the HTTP port.
pub fn serve_with_http(db: &TestDb, root: &Path) -> (Process, u16, u16) {
    let (dimse, http) = (free_port(), free_port());
    let mut env = node_env(db, root, dimse);
    env.push(("FIRSTREAD_HTTP__LISTEN", format!("127.0.0.1:{http}")));
    env.push(("FIRSTREAD_ASSEMBLY__STABLE_AFTER", "1s".into()));
    env.push((
        "FIRSTREAD_HTTP__VIEWER_DIR",
        repo_root().join(".viewer/node_modules/@ohif/app/dist").display().to_string(),
    ));
    (Process::start(&["serve"], &env), dimse, http)
}

/// As [`serve_with_http`], with HTTPS only on the HTTP port, with `certificate`'s files.
pub fn serve_with_https(db: &TestDb, root: &Path, certificate: &pki::Issued) -> (Process, u16, u16) {
    serve_with_https_and(db, root, certificate, &[])
}

/// [`serve_with_https`] with more environment overrides (`FIRSTREAD_*`), applied last.
pub fn serve_with_https_and(
    db: &TestDb,
    root: &Path,
    certificate: &pki::Issued,
    extra: &[(&'static str, String)],
) -> (Process, u16, u16) {
    let (dimse, http) = (free_port(), free_port());
    let mut env = node_env(db, root, dimse);
    env.push(("FIRSTREAD_HTTP__LISTEN", format!("127.0.0.1:{http}")));
    env.push(("FIRSTREAD_HTTP__TLS__CERTIFICATE", certificate.certificate.display().to_string()));
    env.push(("FIRSTREAD_HTTP__TLS__PRIVATE_KEY", certificate.private_key.display().to_string()));
    env.push(("FIRSTREAD_ASSEMBLY__STABLE_AFTER", "1s".into()));
    env.push((
        "FIRSTREAD_HTTP__VIEWER_DIR",
        repo_root().join(".viewer/node_modules/@ohif/app/dist").display().to_string(),
    ));
    env.extend(extra.iter().cloned());
    (Process::start(&["serve"], &env), dimse, http)
}

/// Who a study made by [`sample_study`] is for.
#[derive(Debug, Clone)]
pub struct Patient<'a> {
    /// Patient's Name (PN).
    pub name: &'a str,
    /// Patient ID.
    pub id: &'a str,
    /// Accession Number.
    pub accession: &'a str,
}

/// Writes the sample series into `out` as a new study (new Study, Series and SOP Instance UIDs,
/// `patient`), with ground glass where `ground_glass(z, x)` holds: aerated voxels (below -500 HU)
/// are raised by 300 HU, into the opacity band. `z` is the slice's rank from the lowest (0) to the
/// highest (1), `x` the column from the image's left (the patient's right, 0) to its right (1).
/// Returns the Study Instance UID and the files.
pub fn sample_study(
    out: &Path,
    patient: &Patient<'_>,
    ground_glass: impl Fn(f64, f64) -> bool,
) -> (String, Vec<PathBuf>) {
    sample_study_hu(out, patient, |z, x, hu| if hu < -500.0 && ground_glass(z, x) { hu + 300.0 } else { hu })
}

/// As [`sample_study`], each voxel's HU replaced by `map(z, x, hu)` (stored values clamped to
/// the pixel representation).
pub fn sample_study_hu(
    out: &Path,
    patient: &Patient<'_>,
    map: impl Fn(f64, f64, f64) -> f64,
) -> (String, Vec<PathBuf>) {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let mut src: Vec<(f64, dicom_object::DefaultDicomObject)> = sample_series("")
        .iter()
        .map(|p| {
            let obj = dicom_object::open_file(p).expect("sample");
            let z = obj.element(tags::IMAGE_POSITION_PATIENT).expect("position").to_multi_float64().expect("ds")[2];
            (z, obj)
        })
        .collect();
    src.sort_by(|a, b| a.0.total_cmp(&b.0));
    let uid = || format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
    let (study, series) = (uid(), uid());
    std::fs::create_dir_all(out).expect("out");
    let n = src.len();
    let mut files = Vec::with_capacity(n);
    for (k, (_, mut obj)) in src.into_iter().enumerate() {
        let number = |tag| obj.element(tag).ok().and_then(|e| e.to_float64().ok());
        let (slope, intercept) =
            (number(tags::RESCALE_SLOPE).unwrap_or(1.0), number(tags::RESCALE_INTERCEPT).unwrap_or(0.0));
        let cols = obj.element(tags::COLUMNS).expect("columns").to_int::<usize>().expect("columns");
        let signed = obj.element(tags::PIXEL_REPRESENTATION).ok().and_then(|e| e.to_int::<u16>().ok()) == Some(1);
        let bytes = obj.element(tags::PIXEL_DATA).expect("pixels").to_bytes().expect("native pixels").to_vec();
        let z = k as f64 / (n - 1).max(1) as f64;
        let data: Vec<u8> = bytes
            .chunks_exact(2)
            .enumerate()
            .flat_map(|(i, c)| {
                let stored = if signed {
                    f64::from(i16::from_le_bytes([c[0], c[1]]))
                } else {
                    f64::from(u16::from_le_bytes([c[0], c[1]]))
                };
                let hu = stored * slope + intercept;
                let x = (i % cols) as f64 / cols as f64;
                let hu = map(z, x, hu);
                let v = ((hu - intercept) / slope).round();
                if signed {
                    (v as i16).to_le_bytes()
                } else {
                    (v.max(0.0) as u16).to_le_bytes()
                }
            })
            .collect();
        let sop = uid();
        for (tag, vr, value) in [
            (tags::STUDY_INSTANCE_UID, VR::UI, study.as_str()),
            (tags::SERIES_INSTANCE_UID, VR::UI, series.as_str()),
            (tags::SOP_INSTANCE_UID, VR::UI, sop.as_str()),
            (tags::PATIENT_NAME, VR::PN, patient.name),
            (tags::PATIENT_ID, VR::LO, patient.id),
            (tags::ACCESSION_NUMBER, VR::SH, patient.accession),
        ] {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
        }
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(data)));
        obj.meta_mut().media_storage_sop_instance_uid = sop;
        obj.meta_mut().update_information_group_length();
        let path = out.join(format!("{:04}.dcm", k + 1));
        obj.write_to_file(&path).expect("write");
        files.push(path);
    }
    (study, files)
}

/// A new UID under 2.25 (a UUID as a decimal integer, PS3.5 B.2).
pub fn uid() -> String {
    format!("2.25.{}", uuid::Uuid::new_v4().as_u128())
}

/// Copies `src` as a new instance of `study`/`series` into `out`, after `edit`.
pub fn copy_as(
    src: &Path,
    out: &Path,
    study: &str,
    series: &str,
    edit: impl FnOnce(&mut dicom_object::InMemDicomObject),
) -> PathBuf {
    let mut obj = dicom_object::open_file(src).expect("sample instance");
    let sop = uid();
    for (tag, value) in [
        (dicom_dictionary_std::tags::STUDY_INSTANCE_UID, study),
        (dicom_dictionary_std::tags::SERIES_INSTANCE_UID, series),
        (dicom_dictionary_std::tags::SOP_INSTANCE_UID, &sop),
    ] {
        obj.put(dicom_core::DataElement::new(tag, dicom_core::VR::UI, dicom_core::PrimitiveValue::from(value)));
    }
    edit(&mut obj);
    obj.meta_mut().media_storage_sop_instance_uid = sop.clone();
    obj.meta_mut().update_information_group_length();
    std::fs::create_dir_all(out).expect("out");
    let path = out.join(format!("{sop}.dcm"));
    obj.write_to_file(&path).expect("write");
    path
}
