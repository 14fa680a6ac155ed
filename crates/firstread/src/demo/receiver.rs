//! The receiving AE: an in-process Store SCP standing in for the modality.

use super::*;

/// CT Image Storage (PS3.4 B.5).
pub(super) const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// Enhanced CT Image Storage (PS3.4 B.5).
pub(super) const ENHANCED_CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2.1";

/// Largest object the receiving AE keeps in memory (bytes); result objects are a few MB.
const MAX_OBJECT_BYTES: usize = 1 << 30;

/// One object the receiving AE acknowledged.
#[derive(Debug, Clone)]
pub struct ReceivedObject {
    /// Affected SOP Class UID of the C-STORE-RQ.
    pub sop_class_uid: String,
    /// Affected SOP Instance UID.
    pub sop_instance_uid: String,
    /// Calling AE title of the association it came on.
    pub calling_ae_title: String,
    /// When its C-STORE-RSP Success was handed to the SCP (wall clock, this process), i.e. the
    /// instant the receiving AE acknowledged it.
    pub acknowledged_at: DateTime<Utc>,
    /// Where it was written (Part 10), when the receiver keeps files.
    pub path: Option<PathBuf>,
    /// Data set size (bytes).
    pub bytes: usize,
    /// How many times it was received (a second C-STORE of the same instance counts here and
    /// keeps the first file and time).
    pub copies: usize,
}

#[derive(Debug)]
struct ReceiverState {
    dir: Option<PathBuf>,
    objects: Mutex<HashMap<String, ReceivedObject>>,
}

/// The receiving AE: a Store SCP (crate `firstread-dimse`) on 127.0.0.1 that keeps every object
/// it is sent (in memory, then as a Part 10 file when it has a folder) and records when it
/// acknowledged each one.
#[derive(Debug)]
pub struct Receiver {
    /// Its TCP address.
    pub addr: SocketAddr,
    /// Its AE title.
    pub ae_title: String,
    state: Arc<ReceiverState>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiving AE on 127.0.0.1 (any free port); objects are written under `dir` when
    /// given (the folder must exist).
    ///
    /// # Errors
    /// No free port.
    pub async fn start(ae_title: &str, dir: Option<PathBuf>) -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.context("binding the receiving AE")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ReceiverState { dir, objects: Mutex::new(HashMap::new()) });
        let config = ScpConfig { ae_title: ae_title.to_owned(), ..ScpConfig::default() };
        let scp = StoreScp::new(config, Arc::new(ReceiverStore(state.clone())));
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let span = info_span!("receiver", ae_title = %ae_title);
        let task = tokio::spawn(
            async move {
                if let Err(e) = scp.serve(listener, token).await {
                    warn!(error = %e, "receiving AE stopped");
                }
            }
            .instrument(span),
        );
        Ok(Receiver { addr, ae_title: ae_title.to_owned(), state, shutdown, task })
    }

    /// This AE as an export destination.
    pub fn destination(&self) -> Destination {
        Destination {
            ae_title: self.ae_title.clone(),
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
            tls: None,
        }
    }

    /// The object with this SOP Instance UID, if it was acknowledged.
    pub fn get(&self, sop_instance_uid: &str) -> Option<ReceivedObject> {
        self.objects().get(sop_instance_uid).cloned()
    }

    /// How many distinct objects were acknowledged.
    pub fn count(&self) -> usize {
        self.objects().len()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, HashMap<String, ReceivedObject>> {
        self.state.objects.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops listening and waits (at most 5 s) for associations in progress.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if tokio::time::timeout(Duration::from_secs(5), self.task).await.is_err() {
            warn!("receiving AE did not stop within 5 s");
        }
    }
}

struct ReceiverStore(Arc<ReceiverState>);

struct ReceiverPending {
    state: Arc<ReceiverState>,
    request: StoreRequest,
    bytes: Vec<u8>,
}

impl InstanceStore for ReceiverStore {
    type Pending = ReceiverPending;

    async fn begin(&self, request: &StoreRequest) -> Result<ReceiverPending, Outcome> {
        Ok(ReceiverPending { state: self.0.clone(), request: request.clone(), bytes: Vec::new() })
    }
}

impl PendingInstance for ReceiverPending {
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.bytes.len() + bytes.len() > MAX_OBJECT_BYTES {
            return Err(std::io::Error::other("object larger than 1 GiB"));
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    async fn commit(self) -> Outcome {
        let r = &self.request;
        let known = self.state.objects.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&r.sop_instance_uid);
        let path = match (&self.state.dir, known) {
            (Some(dir), false) => match write_part10(dir, r, &self.bytes).await {
                Ok(path) => Some(path),
                Err(e) => return Outcome::with_comment(status::OUT_OF_RESOURCES, format!("not written: {e}")),
            },
            _ => None,
        };
        let mut objects = self.state.objects.lock().unwrap_or_else(|p| p.into_inner());
        objects.entry(r.sop_instance_uid.clone()).and_modify(|o| o.copies += 1).or_insert_with(|| ReceivedObject {
            sop_class_uid: r.sop_class_uid.clone(),
            sop_instance_uid: r.sop_instance_uid.clone(),
            calling_ae_title: r.association.calling_ae_title.clone(),
            acknowledged_at: Utc::now(),
            path,
            bytes: self.bytes.len(),
            copies: 1,
        });
        Outcome::success()
    }
}

/// Short name of a result object's kind by SOP Class (file names, listings).
pub fn object_kind(sop_class_uid: &str) -> &'static str {
    match sop_class_uid {
        firstread_report::sr::COMPREHENSIVE_3D_SR_STORAGE => "SR",
        firstread_report::seg::SEG_SOP_CLASS_UID => "SEG",
        firstread_report::sc::SC_SOP_CLASS_UID => "SC",
        u if u.starts_with("1.2.840.10008.5.1.4.1.1.88.") => "SR",
        _ => "OBJ",
    }
}

/// Writes a received data set as a Part 10 file `<kind>-<SOP Instance UID>.dcm` (PS3.10 7.1:
/// preamble, "DICM", File Meta Information with the presentation context's transfer syntax).
async fn write_part10(dir: &Path, r: &StoreRequest, dataset: &[u8]) -> anyhow::Result<PathBuf> {
    let safe: String =
        r.sop_instance_uid.chars().map(|c| if c.is_ascii_digit() || c == '.' { c } else { '_' }).collect();
    let path = dir.join(format!("{}-{safe}.dcm", object_kind(&r.sop_class_uid)));
    let mut builder = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(r.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(r.sop_instance_uid.as_str())
        .transfer_syntax(r.transfer_syntax_uid.as_str())
        .implementation_class_uid(firstread_store::storage::IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(firstread_store::storage::IMPLEMENTATION_VERSION_NAME);
    if !r.association.calling_ae_title.trim().is_empty() {
        builder = builder.source_application_entity_title(r.association.calling_ae_title.trim());
    }
    let meta = builder.build()?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out)?;
    out.extend_from_slice(dataset);
    tokio::fs::write(&path, out).await.with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
