//! The Store SCP: accepts associations (PS3.8), answers C-ECHO and C-STORE (PS3.7 9.1.1, 9.1.5),
//! one tokio task per association, and hands each instance's bytes to an [`InstanceStore`] as
//! they arrive, so memory per association stays bounded by the maximum PDU length.
//!
//! The SCP knows nothing about files or databases: it streams data PDVs into whatever
//! [`PendingInstance`] the store gives it and sends the [`Outcome`] that the store's commit
//! returns. No C-STORE-RSP is sent before `commit` has returned.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::association::server::ServerAssociationOptions;
use dicom_ul::association::{Association, AsyncServerAssociation};
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderPresentationReason, AssociationRJSource, PDataValue, PDataValueType,
    PresentationContextResultReason,
};
use dicom_ul::Pdu;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};
use uuid::Uuid;

use crate::command::{self, field, status, Command, Outcome};
use crate::negotiation::{self, AePolicy, AllowedPeer, Refusal, ACCEPTED_TRANSFER_SYNTAXES};
use firstread_tls::ServerTls;

/// Largest command set accepted (bytes); real ones are a few hundred bytes.
const MAX_COMMAND_SET: usize = 64 * 1024;

/// Store SCP settings.
#[derive(Debug, Clone)]
pub struct ScpConfig {
    /// Our AE title (the called AE title peers must use).
    pub ae_title: String,
    /// `Some`: only these calling AEs may associate (RJ reason 3 otherwise).
    pub allowed_peers: Option<Vec<AllowedPeer>>,
    /// Maximum concurrent associations; beyond it: RJ transient, source 3, reason 2.
    pub max_associations: usize,
    /// Silence after which an association is aborted; also bounds the handshake.
    pub idle_timeout: Duration,
    /// Maximum PDU length we advertise and accept (bytes, >= 1018). Also bounds the
    /// A-ASSOCIATE-RQ, so keep it generous (a 128-context request is ~34 KB).
    pub max_pdu_length: u32,
    /// Extra non-standard (private) Storage SOP Class UIDs to accept.
    pub extra_sop_classes: Vec<String>,
}

impl Default for ScpConfig {
    fn default() -> Self {
        ScpConfig {
            ae_title: "FIRSTREAD".into(),
            allowed_peers: None,
            max_associations: 32,
            idle_timeout: Duration::from_secs(60),
            max_pdu_length: 256 * 1024,
            extra_sop_classes: Vec::new(),
        }
    }
}

/// Who is on the other side of an association.
#[derive(Debug, Clone)]
pub struct AssociationInfo {
    /// Our identifier for the association (logs, provenance in the index).
    pub id: Uuid,
    /// Calling AE title, trimmed.
    pub calling_ae_title: String,
    /// Called AE title, trimmed.
    pub called_ae_title: String,
    /// Peer TCP address.
    pub peer: SocketAddr,
    /// Whether the association runs over DICOM TLS (PS3.15 B.9).
    pub tls: bool,
}

/// One C-STORE-RQ whose data set is about to arrive.
#[derive(Debug, Clone)]
pub struct StoreRequest {
    /// The association it arrives on.
    pub association: Arc<AssociationInfo>,
    /// Message ID (0000,0110).
    pub message_id: u16,
    /// Affected SOP Class UID (0000,0002).
    pub sop_class_uid: String,
    /// Affected SOP Instance UID (0000,1000).
    pub sop_instance_uid: String,
    /// The presentation context's transfer syntax: the encoding of the data set bytes.
    pub transfer_syntax_uid: String,
}

/// How an association ended, for [`InstanceStore::association_closed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A-RELEASE-RQ answered.
    Released,
    /// The peer sent A-ABORT.
    AbortedByPeer,
    /// We aborted: protocol violation or idle timeout.
    AbortedByUs,
    /// The transport closed or failed without release.
    ConnectionLost,
}

/// Where C-STORE data sets go. Implemented by the application (durable storage and index).
pub trait InstanceStore: Send + Sync + 'static {
    /// Receives one instance's data set bytes.
    type Pending: PendingInstance;

    /// Prepares to receive the data set of `request`.
    ///
    /// # Errors
    /// The failure [`Outcome`] to answer (e.g. A700 when storage is unavailable); the SCP then
    /// reads and discards the data set and sends that outcome.
    fn begin(&self, request: &StoreRequest) -> impl Future<Output = Result<Self::Pending, Outcome>> + Send;

    /// Whether new associations are accepted now (e.g. not while the storage filesystem is
    /// above its high watermark); `false` answers A-ASSOCIATE-RJ transient, "local limit
    /// exceeded", as when too many associations are open. Asked once per connection, before it
    /// takes a slot.
    fn accepts_associations(&self) -> bool {
        true
    }

    /// Called after an association is established (before any request).
    fn association_opened(&self, _association: &AssociationInfo) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Called once when an association has ended, however it ended.
    fn association_closed(&self, _association: &AssociationInfo, _ending: Ending) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Called when the AE-title policy refused an association (after the A-ASSOCIATE-RJ was
    /// sent): `association` holds the AE titles it asked with.
    fn association_refused(
        &self,
        _association: &AssociationInfo,
        _refusal: &Refusal,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// An instance being received. Dropping it without `commit` must discard everything written.
pub trait PendingInstance: Send + 'static {
    /// Appends data set bytes in order, exactly as received in data PDVs.
    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Completes the instance and returns the C-STORE-RSP status: Success only once the
    /// instance is durable.
    fn commit(self) -> impl Future<Output = Outcome> + Send;
}

/// The Store SCP server. Clones share the association limit and the store: one for the plain TCP
/// listener, one for the DICOM TLS listener.
pub struct StoreScp<S> {
    config: Arc<ScpConfig>,
    store: Arc<S>,
    slots: Arc<Semaphore>,
}

impl<S> Clone for StoreScp<S> {
    fn clone(&self) -> Self {
        StoreScp { config: self.config.clone(), store: self.store.clone(), slots: self.slots.clone() }
    }
}

impl<S: InstanceStore> StoreScp<S> {
    /// A server using `store` for the instances it receives.
    pub fn new(config: ScpConfig, store: Arc<S>) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_associations));
        StoreScp { config: Arc::new(config), store, slots }
    }

    /// Accepts associations on `listener` until `shutdown` is cancelled, then waits (bounded by
    /// the idle timeout) for the associations in progress to end.
    ///
    /// # Errors
    /// Only when accepting on the listener fails persistently; per-association failures are
    /// logged and never end the server.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        self.serve_with(listener, None, shutdown).await
    }

    /// As [`StoreScp::serve`], every connection over DICOM TLS with `tls`'s configuration at the
    /// time it is accepted (a peer that does not complete the TLS handshake, e.g. plain TCP or a
    /// client certificate the CA did not issue, never reaches the association).
    ///
    /// # Errors
    /// As [`StoreScp::serve`].
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        tls: Arc<ServerTls>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        self.serve_with(listener, Some(tls), shutdown).await
    }

    async fn serve_with(
        self,
        listener: TcpListener,
        tls: Option<Arc<ServerTls>>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let tracker = TaskTracker::new();
        info!(ae_title = %self.config.ae_title, addr = %listener.local_addr()?, tls = tls.is_some(), "Store SCP listening");
        loop {
            let (socket, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            if let Err(e) = socket.set_nodelay(true) {
                debug!(error = %e, "could not set TCP_NODELAY");
            }
            let id = Uuid::new_v4();
            let span = info_span!("association", id = %short_id(&id), %peer);
            let refuse = |socket: TcpStream, why: &'static str| {
                let max_pdu = self.config.max_pdu_length;
                match &tls {
                    None => tracker.spawn(reject_busy(socket, max_pdu, why).instrument(span.clone())),
                    Some(tls) => {
                        tracker.spawn(reject_busy_tls(socket, tls.current(), max_pdu, why).instrument(span.clone()))
                    }
                };
            };
            if !self.store.accepts_associations() {
                refuse(socket, "storage above its high watermark");
                continue;
            }
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let config = self.config.clone();
                    let store = self.store.clone();
                    let tls = tls.clone();
                    tracker.spawn(
                        async move {
                            handle_connection(socket, peer, id, &config, &*store, tls.as_deref()).await;
                            drop(permit);
                        }
                        .instrument(span),
                    );
                }
                Err(_) => refuse(socket, "too many concurrent associations"),
            }
        }
        tracker.close();
        if tokio::time::timeout(self.config.idle_timeout, tracker.wait()).await.is_err() {
            warn!("associations still open at shutdown were dropped");
        }
        Ok(())
    }
}

fn short_id(id: &Uuid) -> String {
    id.simple().to_string()[..8].to_owned()
}

/// Answers an association request with A-ASSOCIATE-RJ transient, source "service provider
/// (presentation)", reason "local limit exceeded" (PS3.8 9.3.4, Table 9-21); `why` is logged.
async fn reject_busy<T: AsyncRead + AsyncWrite + Unpin>(mut socket: T, max_pdu: u32, why: &'static str) {
    let mut buf = bytes_buffer();
    let read = dicom_ul::association::read_pdu_from_wire_async(&mut socket, &mut buf, max_pdu, false);
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(Ok(Pdu::AssociationRQ(rq))) => {
            info!(calling = %rq.calling_ae_title, called = %rq.called_ae_title, why,
                "association rejected (transient, local limit exceeded)");
            let rj = Pdu::AssociationRJ(AssociationRJ {
                result: AssociationRJResult::Transient,
                source: AssociationRJSource::ServiceProviderPresentation(
                    AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
                ),
            });
            let mut out = Vec::with_capacity(16);
            if dicom_ul::write_pdu(&mut out, &rj).is_ok() {
                let _ = socket.write_all(&out).await;
            }
        }
        Ok(Ok(_)) => debug!("busy: first PDU was not an A-ASSOCIATE-RQ"),
        Ok(Err(e)) => debug!(error = %e, "busy: could not read the association request"),
        Err(_) => debug!("busy: no association request within 10 s"),
    }
    let _ = socket.shutdown().await;
}

/// [`reject_busy`] after the TLS handshake (the rejection is a PDU like any other).
async fn reject_busy_tls(socket: TcpStream, config: Arc<rustls::ServerConfig>, max_pdu: u32, why: &'static str) {
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(socket);
    match tokio::time::timeout(Duration::from_secs(10), accept).await {
        Ok(Ok(stream)) => reject_busy(stream, max_pdu, why).await,
        Ok(Err(e)) => debug!(error = %e, "busy: TLS handshake failed"),
        Err(_) => debug!("busy: no TLS handshake within 10 s"),
    }
}

fn bytes_buffer() -> bytes::BytesMut {
    bytes::BytesMut::with_capacity(16 * 1024)
}

async fn handle_connection<S: InstanceStore>(
    socket: TcpStream,
    peer: SocketAddr,
    id: Uuid,
    config: &ScpConfig,
    store: &S,
    tls: Option<&ServerTls>,
) {
    let refusal = Arc::new(std::sync::Mutex::new(None));
    let policy = AePolicy {
        ae_title: config.ae_title.clone(),
        allowed_peers: config.allowed_peers.clone(),
        peer_ip: peer.ip(),
        refusal: refusal.clone(),
    };
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(policy)
        .ae_title(config.ae_title.clone())
        .max_pdu_length(config.max_pdu_length)
        .strict(true)
        .read_timeout(config.idle_timeout)
        .write_timeout(config.idle_timeout)
        .with_abstract_syntax(dicom_dictionary_std::uids::VERIFICATION);
    for uid in negotiation::storage_sop_classes() {
        options = options.with_abstract_syntax(uid);
    }
    for uid in &config.extra_sop_classes {
        options = options.with_abstract_syntax(uid.clone());
    }
    for (uid, _) in ACCEPTED_TRANSFER_SYNTAXES {
        options = options.with_transfer_syntax(*uid);
    }

    // Rejections are logged with both AE titles by the policy; this says what was sent. The TLS
    // handshake happens before dicom-ul's read timeout applies: the idle timeout bounds both.
    match tls {
        None => match options.establish_async(socket).await {
            Ok(association) => run_association(association, peer, id, store, false).await,
            Err(e) => info!(error = %e, "association not established"),
        },
        Some(tls) => {
            let options = options.tls_config(tls.current());
            match tokio::time::timeout(config.idle_timeout, options.establish_tls_async(socket)).await {
                Ok(Ok(association)) => run_association(association, peer, id, store, true).await,
                Ok(Err(e)) => info!(error = %e, "TLS association not established"),
                Err(_) => info!("TLS association not established: no handshake within the idle timeout"),
            }
        }
    }
    // refused by the AE-title policy: the application records it (e.g. in its audit trail)
    let refused = refusal.lock().ok().and_then(|mut cell| cell.take());
    if let Some(refusal) = refused {
        let info = AssociationInfo {
            id,
            calling_ae_title: refusal.calling_ae_title.clone(),
            called_ae_title: refusal.called_ae_title.clone(),
            peer,
            tls: tls.is_some(),
        };
        store.association_refused(&info, &refusal).await;
    }
}

async fn run_association<S: InstanceStore, T: AsyncRead + AsyncWrite + Unpin + Send>(
    association: AsyncServerAssociation<T>,
    peer: SocketAddr,
    id: Uuid,
    store: &S,
    tls: bool,
) {
    let info = Arc::new(AssociationInfo {
        id,
        calling_ae_title: association.peer_ae_title().trim().to_owned(),
        called_ae_title: association.called_ae_title().trim().to_owned(),
        peer,
        tls,
    });
    let accepted = association
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .count();
    info!(
        calling = %info.calling_ae_title,
        called = %info.called_ae_title,
        contexts = association.presentation_contexts().len(),
        accepted,
        peer_max_pdu = association.requestor_max_pdu_length(),
        tls,
        "association accepted"
    );
    store.association_opened(&info).await;
    let mut session = Session { association, info: info.clone(), store, stage: Stage::Idle, stored: 0 };
    let ending = session.run().await;
    info!(?ending, instances = session.stored, "association ended");
    store.association_closed(&info, ending).await;
}

/// Where the association is in the DIMSE message exchange.
enum Stage<P> {
    /// Between messages.
    Idle,
    /// Command fragments arriving on a presentation context.
    Command { context_id: u8, bytes: Vec<u8> },
    /// Data set fragments arriving for a command.
    Data { context_id: u8, command: Command, sink: Sink<P> },
}

/// Where a data set's bytes go.
enum Sink<P> {
    /// Into the store.
    Store(P),
    /// Discarded; the outcome to answer once the data set is complete.
    Discard(Outcome),
}

/// Why the message exchange stopped.
enum Stop {
    Ended(Ending),
    /// A protocol violation: abort with this reason.
    Violation(&'static str),
}

struct Session<'a, S: InstanceStore, T> {
    association: AsyncServerAssociation<T>,
    info: Arc<AssociationInfo>,
    store: &'a S,
    stage: Stage<S::Pending>,
    stored: u64,
}

impl<S: InstanceStore, T: AsyncRead + AsyncWrite + Unpin + Send> Session<'_, S, T> {
    async fn run(&mut self) -> Ending {
        let stop = self.exchange().await;
        // Whatever was being received is dropped here: the pending instance discards itself.
        self.stage = Stage::Idle;
        match stop {
            Stop::Ended(ending) => ending,
            Stop::Violation(reason) => {
                warn!(reason, "aborting association");
                let abort = Pdu::AbortRQ {
                    source: AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::UnexpectedPdu),
                };
                let _ = self.association.send(&abort).await;
                Ending::AbortedByUs
            }
        }
    }

    async fn exchange(&mut self) -> Stop {
        loop {
            let pdu = match self.association.receive().await {
                Ok(pdu) => pdu,
                Err(dicom_ul::association::Error::Timeout { .. }) => {
                    info!("idle timeout");
                    return Stop::Violation("idle timeout");
                }
                Err(e) => {
                    debug!(error = %e, "connection lost");
                    return Stop::Ended(Ending::ConnectionLost);
                }
            };
            match pdu {
                Pdu::PData { data } => {
                    for pdv in data {
                        if let Err(stop) = self.on_pdv(pdv).await {
                            return stop;
                        }
                    }
                }
                Pdu::ReleaseRQ => {
                    if !matches!(self.stage, Stage::Idle) {
                        warn!("A-RELEASE-RQ in the middle of a message; the partial instance is discarded");
                    }
                    // A peer that closes without waiting for A-RELEASE-RP is fine.
                    let _ = self.association.send(&Pdu::ReleaseRP).await;
                    return Stop::Ended(Ending::Released);
                }
                Pdu::AbortRQ { source } => {
                    info!(?source, "A-ABORT received");
                    return Stop::Ended(Ending::AbortedByPeer);
                }
                _ => return Stop::Violation("unexpected PDU"),
            }
        }
    }

    async fn on_pdv(&mut self, pdv: PDataValue) -> Result<(), Stop> {
        let context_id = pdv.presentation_context_id;
        match pdv.value_type {
            PDataValueType::Command => {
                let mut bytes = match std::mem::replace(&mut self.stage, Stage::Idle) {
                    Stage::Idle => Vec::new(),
                    Stage::Command { context_id: c, bytes } if c == context_id => bytes,
                    Stage::Command { .. } => return Err(Stop::Violation("command fragments on two contexts")),
                    Stage::Data { .. } => return Err(Stop::Violation("command PDV inside a data set")),
                };
                bytes.extend_from_slice(&pdv.data);
                if bytes.len() > MAX_COMMAND_SET {
                    return Err(Stop::Violation("command set too large"));
                }
                if pdv.is_last {
                    self.on_command(context_id, &bytes).await
                } else {
                    self.stage = Stage::Command { context_id, bytes };
                    Ok(())
                }
            }
            PDataValueType::Data => {
                let Stage::Data { context_id: expected, .. } = &self.stage else {
                    return Err(Stop::Violation("data PDV without a command"));
                };
                if *expected != context_id {
                    return Err(Stop::Violation("data PDV on another presentation context"));
                }
                if let Stage::Data { sink, .. } = &mut self.stage {
                    if let Sink::Store(pending) = sink {
                        if let Err(e) = pending.write(&pdv.data).await {
                            warn!(error = %e, "writing the instance failed");
                            *sink =
                                Sink::Discard(Outcome::with_comment(status::OUT_OF_RESOURCES, "storage write failed"));
                        }
                    }
                }
                if pdv.is_last {
                    if let Stage::Data { context_id, command, sink } = std::mem::replace(&mut self.stage, Stage::Idle) {
                        let outcome = match sink {
                            Sink::Store(pending) => pending.commit().await,
                            Sink::Discard(outcome) => outcome,
                        };
                        if outcome.is_success_or_warning() && command.field == field::C_STORE_RQ {
                            self.stored += 1;
                        }
                        self.respond(context_id, &command, &outcome).await?;
                    }
                }
                Ok(())
            }
        }
    }

    async fn on_command(&mut self, context_id: u8, bytes: &[u8]) -> Result<(), Stop> {
        let Some(context) = self
            .association
            .presentation_contexts()
            .iter()
            .find(|pc| pc.id == context_id && pc.reason == PresentationContextResultReason::Acceptance)
            .cloned()
        else {
            return Err(Stop::Violation("message on a presentation context that was not accepted"));
        };
        let command = match Command::parse(bytes) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "undecodable command set");
                return Err(Stop::Violation("undecodable command set"));
            }
        };
        debug!(field = command.field, message_id = command.message_id, "command");
        match command.field {
            field::C_ECHO_RQ if !command.has_data_set => self.respond(context_id, &command, &Outcome::success()).await,
            field::C_STORE_RQ if command.has_data_set => {
                let sink = if command.affected_sop_class_uid != command::trim_uid(&context.abstract_syntax) {
                    Sink::Discard(Outcome::with_comment(
                        status::DATA_SET_MISMATCH,
                        "SOP Class differs from the presentation context",
                    ))
                } else {
                    let request = StoreRequest {
                        association: self.info.clone(),
                        message_id: command.message_id,
                        sop_class_uid: command.affected_sop_class_uid.clone(),
                        sop_instance_uid: command.affected_sop_instance_uid.clone(),
                        transfer_syntax_uid: command::trim_uid(&context.transfer_syntax).to_owned(),
                    };
                    match self.store.begin(&request).await {
                        Ok(pending) => Sink::Store(pending),
                        Err(outcome) => Sink::Discard(outcome),
                    }
                };
                self.stage = Stage::Data { context_id, command, sink };
                Ok(())
            }
            field::C_STORE_RQ => {
                let outcome = Outcome::with_comment(status::CANNOT_UNDERSTAND, "C-STORE-RQ without a data set");
                self.respond(context_id, &command, &outcome).await
            }
            _ => {
                let outcome = Outcome::with_comment(status::UNRECOGNIZED_OPERATION, "only C-ECHO and C-STORE");
                if command.has_data_set {
                    self.stage = Stage::Data { context_id, command, sink: Sink::Discard(outcome) };
                    Ok(())
                } else {
                    self.respond(context_id, &command, &outcome).await
                }
            }
        }
    }

    async fn respond(&mut self, context_id: u8, command: &Command, outcome: &Outcome) -> Result<(), Stop> {
        if outcome.status != status::SUCCESS {
            info!(
                status = format_args!("{:04X}", outcome.status),
                comment = outcome.comment.as_deref().unwrap_or(""),
                message_id = command.message_id,
                "non-success response"
            );
        }
        let data = command::encode_response(command, outcome);
        let pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data,
            }],
        };
        self.association.send(&pdu).await.map_err(|e| {
            debug!(error = %e, "could not send the response");
            Stop::Ended(Ending::ConnectionLost)
        })
    }
}
