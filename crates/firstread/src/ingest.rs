//! Ingest: connects the Store SCP to durable storage and the index, and maps storage outcomes
//! to C-STORE statuses (PS3.4 B.2.3).
//!
//! Order per instance: stream to a temporary Part 10 file -> fsync -> read attributes back and
//! check them against the C-STORE-RQ -> link into the study/series layout -> index row
//! committed, with the study's stability time pushed in the same statement -> Success. Any failure before the commit answers a failure status, so an
//! acknowledged instance is never lost.

use std::sync::Arc;

use firstread_dimse::command::status;
use firstread_dimse::{AssociationInfo, Ending, InstanceStore, Outcome, PendingInstance, StoreRequest};
use firstread_queue::assembly::{is_analysable_class, OpenAssociation};
use firstread_queue::Assembly;
use firstread_store::attributes::AttributeError;
use firstread_store::storage::PendingFile;
use firstread_store::{Announced, Arrival, Index, Provenance, Recorded, Storage, StorageError};
use tracing::{debug, warn};

use crate::config::AssemblyConfig;

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
}

impl Ingest {
    /// Ingest into `storage`, indexed in `index`, feeding study assembly with `policy`.
    pub fn new(storage: Storage, index: Index, assembly: Assembly, policy: AssemblyConfig) -> Self {
        Ingest { inner: Arc::new(Inner { storage, index, assembly, policy }) }
    }
}

/// One instance being received.
#[derive(Debug)]
pub struct IngestPending {
    file: PendingFile,
    provenance: Provenance,
    inner: Arc<Inner>,
}

impl InstanceStore for Ingest {
    type Pending = IngestPending;

    async fn begin(&self, request: &StoreRequest) -> Result<IngestPending, Outcome> {
        let announced = Announced {
            sop_class_uid: &request.sop_class_uid,
            sop_instance_uid: &request.sop_instance_uid,
            transfer_syntax_uid: &request.transfer_syntax_uid,
            source_ae_title: &request.association.calling_ae_title,
        };
        let file = self.inner.storage.begin(&announced).await.map_err(|e| failure(&e))?;
        Ok(IngestPending { file, provenance: provenance(&request.association), inner: self.inner.clone() })
    }

    async fn association_opened(&self, a: &AssociationInfo) {
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

    async fn association_closed(&self, a: &AssociationInfo, ending: Ending) {
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
    }
}

impl PendingInstance for IngestPending {
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write(bytes).await
    }

    async fn commit(self) -> Outcome {
        let received = match self.file.finish().await {
            Ok(r) => r,
            Err(e) => return failure(&e),
        };
        let attributes = received.attributes.clone();
        let size = received.size_bytes;
        let placed = match self.inner.storage.place(received).await {
            Ok(p) => p,
            Err(e) => return failure(&e),
        };
        let arrival = Arrival {
            stable_after: self.inner.policy.stable_after_for(&self.provenance.calling_ae_title),
            reanalyse_late: self.inner.policy.reanalyse_late,
            analysable: is_analysable_class(&attributes.sop_class_uid),
        };
        match self.inner.index.record(&attributes, &self.provenance, &placed.relative_path, size, &arrival).await {
            Ok(Recorded::Inserted) => {
                debug!(sop_instance_uid = %attributes.sop_instance_uid, "stored");
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

fn provenance(a: &AssociationInfo) -> Provenance {
    Provenance {
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
