//! Ingest: connects the Store SCP to durable storage and the index, and maps storage outcomes
//! to C-STORE statuses (PS3.4 B.2.3).
//!
//! Order per instance: stream to a temporary Part 10 file -> fsync -> read attributes back and
//! check them against the C-STORE-RQ -> link into the study/series layout -> index row
//! committed -> Success. Any failure before the commit answers a failure status, so an
//! acknowledged instance is never lost.

use std::sync::Arc;

use firstread_dimse::command::status;
use firstread_dimse::{AssociationInfo, InstanceStore, Outcome, PendingInstance, StoreRequest};
use firstread_store::attributes::AttributeError;
use firstread_store::storage::PendingFile;
use firstread_store::{Announced, Index, Provenance, Recorded, Storage, StorageError};
use tracing::{debug, warn};

/// The application's [`InstanceStore`].
#[derive(Debug, Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    storage: Storage,
    index: Index,
}

impl Ingest {
    /// Ingest into `storage`, indexed in `index`.
    pub fn new(storage: Storage, index: Index) -> Self {
        Ingest { inner: Arc::new(Inner { storage, index }) }
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
        match self.inner.index.record(&attributes, &self.provenance, &placed.relative_path, size).await {
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
