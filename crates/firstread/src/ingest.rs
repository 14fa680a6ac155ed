//! Ingest: connects the Store SCP and STOW-RS to durable storage and the index, and maps
//! storage outcomes to C-STORE statuses (PS3.4 B.2.3), which STOW-RS reports as Failure and
//! Warning Reasons (PS3.18 10.5.3).
//!
//! Order per instance: stream to a temporary Part 10 file -> fsync -> read attributes back and
//! check them against the C-STORE-RQ -> link into the study/series layout -> index row
//! committed, with the study's stability time pushed in the same statement -> Success. Any failure before the commit answers a failure status, so an
//! acknowledged instance is never lost.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use firstread_dicomweb::stow::{SOP_CLASS_NOT_SUPPORTED, STUDY_MISMATCH, TRANSFER_SYNTAX_NOT_SUPPORTED};
use firstread_dicomweb::{StowBegun, StowOutcome, StowPart, StowRequest, StowSink};
use firstread_dimse::command::status;
use firstread_dimse::negotiation::{is_storage_sop_class, ACCEPTED_TRANSFER_SYNTAXES};
use firstread_dimse::{AssociationInfo, Ending, InstanceStore, Outcome, PendingInstance, Refusal, StoreRequest};
use firstread_queue::assembly::{is_analysable_class, OpenAssociation};
use firstread_queue::Assembly;
use firstread_store::attributes::AttributeError;
use firstread_store::storage::PendingFile;
use firstread_store::{Announced, Arrival, Index, Provenance, Recorded, Storage, StorageError};
use tracing::{debug, warn};

use crate::config::{AssemblyConfig, PeerSites};

/// The application's [`InstanceStore`].
#[derive(Debug, Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    storage: Storage,
    index: Index,
    assembly: Assembly,
    policy: AssemblyConfig,
    /// Our AE title, recorded as the called AE of STOW-RS deliveries.
    ae_title: String,
    /// Private Storage SOP Classes accepted besides the standard ones.
    extra_sop_classes: Vec<String>,
    /// The site of each sender.
    sites: PeerSites,
    /// The storage filesystem's watermarks.
    guard: firstread_store::DiskGuard,
    /// Where each stored image goes to be decoded ahead (`[worker] prefetch_mib`).
    prefetch: Option<firstread_volume::Prefetcher>,
}

/// The calling AE title recorded for instances received with STOW-RS (no association).
pub const STOW_SOURCE: &str = "STOW-RS";

impl Ingest {
    /// Ingest into `storage`, indexed in `index`, feeding study assembly with `policy`;
    /// `ae_title` is ours, `extra_sop_classes` the private Storage SOP Classes accepted, `sites`
    /// the site of each sender (STOW-RS requests name theirs), `watermarks` those of the disk
    /// guard on the storage root, `prefetch` where stored images are decoded ahead (none: not).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        storage: Storage,
        index: Index,
        assembly: Assembly,
        policy: AssemblyConfig,
        ae_title: &str,
        extra_sop_classes: &[String],
        sites: PeerSites,
        watermarks: firstread_store::Watermarks,
        prefetch: Option<firstread_volume::Prefetcher>,
    ) -> Self {
        let guard = firstread_store::DiskGuard::new(storage.root(), watermarks);
        let inner = Inner {
            guard,
            storage,
            index,
            assembly,
            policy,
            ae_title: ae_title.to_owned(),
            extra_sop_classes: extra_sop_classes.to_vec(),
            sites,
            prefetch,
        };
        Ingest { inner: Arc::new(inner) }
    }

    /// Starts one STOW-RS instance like a C-STORE: the same checks, durable file, index row
    /// and study assembly; the C-STORE status becomes the STOW-RS Failure/Warning Reason.
    async fn begin_stow(&self, r: StowRequest<'_>) -> Result<IngestPending, StowOutcome> {
        let begun = Instant::now();
        let failed = |reason: u16, comment: String| StowOutcome::Failed { reason, comment };
        if !ACCEPTED_TRANSFER_SYNTAXES.iter().any(|(uid, _)| *uid == r.transfer_syntax_uid) {
            let comment = format!("transfer syntax {} not supported", r.transfer_syntax_uid);
            return Err(failed(TRANSFER_SYNTAX_NOT_SUPPORTED, comment));
        }
        if !is_storage_sop_class(r.sop_class_uid) && !self.inner.extra_sop_classes.iter().any(|c| c == r.sop_class_uid)
        {
            return Err(failed(SOP_CLASS_NOT_SUPPORTED, format!("SOP Class {} not supported", r.sop_class_uid)));
        }
        let announced = Announced {
            sop_class_uid: r.sop_class_uid,
            sop_instance_uid: r.sop_instance_uid,
            transfer_syntax_uid: r.transfer_syntax_uid,
            source_ae_title: "",
        };
        let file = self.inner.storage.begin(&announced).await.map_err(|e| stow_outcome(failure(&e)))?;
        let begun = ingest_step("begin", begun);
        let provenance = Provenance {
            site: r.site.to_owned(),
            calling_ae_title: STOW_SOURCE.into(),
            called_ae_title: self.inner.ae_title.clone(),
            peer: r.client,
            association_id: None,
        };
        Ok(IngestPending {
            file,
            provenance,
            inner: self.inner.clone(),
            expected_study: r.study.map(str::to_owned),
            begun,
        })
    }
}

/// A C-STORE outcome as a STOW-RS outcome (the status codes are shared, PS3.18 10.5.3).
fn stow_outcome(o: Outcome) -> StowOutcome {
    let comment = o.comment.unwrap_or_default();
    match o.status {
        status::SUCCESS => StowOutcome::Stored,
        s if (0xB000..=0xBFFF).contains(&s) || s == 0x0001 => StowOutcome::Warning { reason: s, comment },
        s => StowOutcome::Failed { reason: s, comment },
    }
}

impl StowSink for Ingest {
    fn begin<'a>(&'a self, request: StowRequest<'a>) -> StowBegun<'a> {
        Box::pin(async move { self.begin_stow(request).await.map(|p| Box::new(StowPending(p)) as Box<dyn StowPart>) })
    }

    fn accepts(&self) -> Result<(), String> {
        let state = self.inner.guard.check();
        if state.refusing {
            Err(format!("the storage is {:.1} % full (disk guard)", state.used_pct))
        } else {
            Ok(())
        }
    }
}

/// A STOW-RS instance being received: the same pending file as a C-STORE's.
struct StowPending(IngestPending);

impl StowPart for StowPending {
    fn write<'a>(&'a mut self, bytes: &'a [u8]) -> Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + 'a>> {
        Box::pin(self.0.write(bytes))
    }

    fn finish(self: Box<Self>) -> Pin<Box<dyn Future<Output = StowOutcome> + Send>> {
        Box::pin(async move { stow_outcome(self.0.commit().await) })
    }
}

/// One instance being received.
#[derive(Debug)]
pub struct IngestPending {
    file: PendingFile,
    provenance: Provenance,
    inner: Arc<Inner>,
    /// STOW-RS to `/studies/{study}`: the Study Instance UID the instance must carry.
    expected_study: Option<String>,
    /// When its first bytes were asked for (the C-STORE-RQ, or the STOW-RS part).
    begun: Instant,
}

/// Records how long one step of storing an instance took (`firstread_ingest_seconds`, by
/// step: `begin` the temporary file's creation on the C-STORE-RQ, `receive` from there to the
/// last data, `finish` the file's fsync and the attributes read back, `place` the link into
/// the study's folder and the folder's fsync, `index` the index row committed to PostgreSQL);
/// returns the step's end, the next one's start.
fn ingest_step(step: &'static str, since: Instant) -> Instant {
    let now = Instant::now();
    metrics::histogram!("firstread_ingest_seconds", "step" => step).record((now - since).as_secs_f64());
    now
}

impl InstanceStore for Ingest {
    type Pending = IngestPending;

    fn accepts_associations(&self) -> bool {
        !self.inner.guard.check().refusing
    }

    async fn begin(&self, request: &StoreRequest) -> Result<IngestPending, Outcome> {
        let begun = Instant::now();
        let announced = Announced {
            sop_class_uid: &request.sop_class_uid,
            sop_instance_uid: &request.sop_instance_uid,
            transfer_syntax_uid: &request.transfer_syntax_uid,
            source_ae_title: &request.association.calling_ae_title,
        };
        let file = self.inner.storage.begin(&announced).await.map_err(|e| failure(&e))?;
        let begun = ingest_step("begin", begun);
        Ok(IngestPending {
            file,
            provenance: provenance(&request.association, &self.inner.sites),
            inner: self.inner.clone(),
            expected_study: None,
            begun,
        })
    }

    async fn association_opened(&self, a: &AssociationInfo) {
        let site = self.inner.sites.site_of(&a.calling_ae_title).to_owned();
        metrics::counter!("firstread_associations_total", "site" => site).increment(1);
        metrics::gauge!("firstread_associations_open").increment(1.0);
        let peer = a.peer.to_string();
        let open = OpenAssociation {
            id: a.id,
            calling_ae_title: &a.calling_ae_title,
            called_ae_title: &a.called_ae_title,
            peer_address: &peer,
        };
        if let Err(e) = self.inner.assembly.association_opened(&open).await {
            warn!(error = %e, "could not record the association for study assembly");
        }
    }

    async fn association_refused(&self, a: &AssociationInfo, refusal: &Refusal) {
        metrics::counter!("firstread_associations_refused_total").increment(1);
        // DICOM's authentication is the AE title: a refused one is a failed login on record
        let event = firstread_audit::Event {
            actor: firstread_audit::Actor::Ae(a.calling_ae_title.clone()),
            address: Some(a.peer.to_string()),
            action: firstread_audit::Action::Login,
            study: None,
            site: None,
            success: false,
            detail: serde_json::json!({ "association": a.id.to_string(), "called": a.called_ae_title,
                "rejected": refusal.reason, "tls": a.tls }),
        };
        if let Err(e) = firstread_audit::record(self.inner.index.pool(), &event).await {
            warn!(error = %e, "could not record the refused association in the audit trail");
        }
    }

    async fn association_closed(&self, a: &AssociationInfo, ending: Ending) {
        metrics::gauge!("firstread_associations_open").decrement(1.0);
        let ending = match ending {
            Ending::Released => "released",
            Ending::AbortedByPeer => "aborted",
            Ending::AbortedByUs => "aborted_by_node",
            Ending::ConnectionLost => "connection_lost",
        };
        if let Err(e) = self.inner.assembly.association_closed(a.id, ending).await {
            // Its heartbeat stops with it, so assembly goes on after `association_stale_after`.
            warn!(error = %e, "could not record the end of the association");
        }
        let (pool, peer) = (self.inner.index.pool(), a.peer.to_string());
        if let Err(e) = firstread_audit::record_association(pool, a.id, &a.calling_ae_title, &peer, a.tls, ending).await
        {
            warn!(error = %e, "could not record the association in the audit trail");
        }
    }
}

impl PendingInstance for IngestPending {
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write(bytes).await
    }

    async fn commit(self) -> Outcome {
        let via = if self.provenance.association_id.is_some() { "dimse" } else { "stow-rs" };
        let site = self.provenance.site.clone();
        let outcome = self.store().await;
        if outcome.status == status::SUCCESS || (0xB000..=0xBFFF).contains(&outcome.status) {
            metrics::counter!("firstread_instances_received_total", "via" => via, "site" => site).increment(1);
        } else {
            metrics::counter!("firstread_instances_failed_total", "via" => via, "site" => site).increment(1);
        }
        outcome
    }
}

impl IngestPending {
    /// Finishes the file, places it and indexes it; the outcome to acknowledge.
    async fn store(self) -> Outcome {
        let t = ingest_step("receive", self.begun);
        let received = match self.file.finish().await {
            Ok(r) => r,
            Err(e) => return failure(&e),
        };
        let t = ingest_step("finish", t);
        if let Some(study) = &self.expected_study {
            if *study != received.attributes.study_instance_uid {
                return Outcome::with_comment(STUDY_MISMATCH, "Study Instance UID differs from the request's study");
            }
        }
        let attributes = received.attributes.clone();
        let size = received.size_bytes;
        metrics::counter!("firstread_received_bytes_total", "site" => self.provenance.site.clone()).increment(size);
        let placed = match self.inner.storage.place(received, &self.provenance.site).await {
            Ok(p) => p,
            Err(e) => return failure(&e),
        };
        let t = ingest_step("place", t);
        let arrival = Arrival {
            stable_after: self.inner.policy.stable_after_for(&self.provenance.calling_ae_title),
            reanalyse_late: self.inner.policy.reanalyse_late,
            analysable: is_analysable_class(&attributes.sop_class_uid),
            derived: false,
        };
        let recorded =
            self.inner.index.record(&attributes, &self.provenance, &placed.relative_path, size, &arrival).await;
        ingest_step("index", t);
        match recorded {
            Ok(Recorded::Inserted) => {
                debug!(sop_instance_uid = %attributes.sop_instance_uid, "stored");
                // durable and indexed: decoded ahead on the prefetch thread (never waited for)
                if let Some(prefetch) = self.inner.prefetch.as_ref().filter(|_| arrival.analysable) {
                    prefetch.offer(self.inner.storage.resolve(&placed.relative_path));
                }
                Outcome::success()
            }
            Ok(Recorded::Duplicate) => {
                debug!(sop_instance_uid = %attributes.sop_instance_uid, "duplicate, first copy kept");
                Outcome::success()
            }
            Ok(Recorded::Conflict { path, .. }) => {
                warn!(
                    sop_instance_uid = %attributes.sop_instance_uid,
                    "conflict: SOP Instance UID already stored in another study/series; first copy kept"
                );
                if placed.created && placed.relative_path != path {
                    if let Err(e) = self.inner.storage.remove(&placed.relative_path).await {
                        warn!(error = %e, "could not remove the conflicting copy");
                    }
                }
                Outcome::with_comment(status::WARNING_COERCION, "SOP Instance UID exists in another series; kept first")
            }
            Err(e) => {
                // The placed file stays: a concurrent duplicate may already be indexed against it,
                // and a retry by the peer indexes it.
                warn!(error = %e, "index unavailable");
                Outcome::with_comment(status::OUT_OF_RESOURCES, "index database unavailable")
            }
        }
    }
}

fn provenance(a: &AssociationInfo, sites: &PeerSites) -> Provenance {
    Provenance {
        site: sites.site_of(&a.calling_ae_title).to_owned(),
        calling_ae_title: a.calling_ae_title.clone(),
        called_ae_title: a.called_ae_title.clone(),
        peer: a.peer,
        association_id: Some(a.id),
    }
}

/// The C-STORE failure status for a storage error.
fn failure(e: &StorageError) -> Outcome {
    warn!(error = %e, "instance not stored");
    match e {
        StorageError::Io(_) => Outcome::with_comment(status::OUT_OF_RESOURCES, "storage unavailable"),
        StorageError::Mismatch(what) => {
            Outcome::with_comment(status::DATA_SET_MISMATCH, format!("{what} differs from the C-STORE-RQ"))
        }
        StorageError::Attributes(AttributeError::Unparsable(_)) => {
            Outcome::with_comment(status::CANNOT_UNDERSTAND, "data set cannot be parsed")
        }
        StorageError::Attributes(AttributeError::Missing(what)) => {
            Outcome::with_comment(status::CANNOT_UNDERSTAND, format!("missing {what}"))
        }
        StorageError::Attributes(AttributeError::InvalidUid { attribute }) => {
            Outcome::with_comment(status::CANNOT_UNDERSTAND, format!("invalid {attribute}"))
        }
    }
}
