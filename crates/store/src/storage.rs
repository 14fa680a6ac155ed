//! Durable instance files under a storage root.
//!
//! Each instance is streamed into `incoming/<uuid>.part` as a Part 10 file (PS3.10 7.1: 128-byte
//! preamble, "DICM", File Meta Information whose Transfer Syntax UID is the presentation
//! context's, then the data set bytes exactly as received), fsync'd, then linked without replace
//! into `studies/<study>/<series>/<sop>.dcm` and the directory fsync'd. A temporary file that is
//! dropped before [`Storage::place`] is deleted, so an aborted transfer leaves nothing behind.
//! Each process writes into its own `incoming/<id>/`, guarded by an exclusive lock on
//! `incoming/<id>.lock` held while it lives. Leftovers of a crashed process (a lock nobody holds)
//! were never acknowledged and are removed by the next process to open the storage root; the
//! temporary files of live processes sharing the root are never touched.

use std::io;
use std::path::{Path, PathBuf};

use dicom_object::FileMetaTableBuilder;
use tokio::io::{AsyncWriteExt, BufWriter};
use uuid::Uuid;

use crate::attributes::{self, AttributeError, InstanceAttributes};

/// Implementation Class UID written in the File Meta Information (PS3.7 D.3.3.2), under the
/// UUID-derived root 2.25 (PS3.5 B.2).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.163045376598136411339432545626519395618";
/// Implementation Version Name (0002,0013), at most 16 characters.
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("FIRSTREAD_", env!("CARGO_PKG_VERSION"));

/// Buffer for writes to the temporary file (bytes).
const WRITE_BUFFER: usize = 512 * 1024;

/// The storage root and its durability setting.
#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
    fsync: bool,
    /// This process's `incoming/<id>/`.
    incoming: PathBuf,
    /// Held (locked) for the life of the process; a crashed process's lock is free.
    _lock: std::sync::Arc<std::fs::File>,
}

/// What is known of an instance before its data set arrives (from the C-STORE-RQ).
#[derive(Debug, Clone)]
pub struct Announced<'a> {
    /// Affected SOP Class UID.
    pub sop_class_uid: &'a str,
    /// Affected SOP Instance UID.
    pub sop_instance_uid: &'a str,
    /// The presentation context's transfer syntax.
    pub transfer_syntax_uid: &'a str,
    /// Calling AE title, written as Source Application Entity Title (0002,0016).
    pub source_ae_title: &'a str,
}

/// Why an instance could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Disk I/O failed (full, read-only, permissions...).
    #[error("storage I/O: {0}")]
    Io(#[from] io::Error),
    /// The received data set cannot be indexed.
    #[error(transparent)]
    Attributes(#[from] AttributeError),
    /// The data set's SOP Class/Instance UID differs from the command's.
    #[error("{0} in the data set differs from the C-STORE-RQ")]
    Mismatch(&'static str),
}

/// A fully received, fsync'd temporary file with its attributes, not yet placed.
#[derive(Debug)]
pub struct Received {
    temp: TempFile,
    /// The index attributes read back from the file.
    pub attributes: InstanceAttributes,
    /// File size in bytes.
    pub size_bytes: u64,
}

/// Where a received instance ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Path relative to the storage root.
    pub relative_path: String,
    /// `false` when a file already existed at that path (the same instance received before);
    /// the existing file is kept and the new one discarded.
    pub created: bool,
}

impl Storage {
    /// A storage root; creates `studies/` and this process's `incoming/<id>/`, and removes what
    /// crashed processes left in `incoming/`.
    ///
    /// # Errors
    /// When the directories cannot be created, listed or locked.
    pub async fn open(root: impl Into<PathBuf>, fsync: bool) -> io::Result<Self> {
        let root = root.into();
        tokio::task::spawn_blocking(move || Self::open_blocking(root, fsync)).await.map_err(io::Error::other)?
    }

    fn open_blocking(root: PathBuf, fsync: bool) -> io::Result<Self> {
        let incoming_root = root.join("incoming");
        std::fs::create_dir_all(&incoming_root)?;
        std::fs::create_dir_all(root.join("studies"))?;
        let stale = remove_abandoned(&incoming_root)?;
        if stale > 0 {
            tracing::info!(stale, "removed unacknowledged partial instances of stopped processes");
        }
        let id = Uuid::new_v4().simple().to_string();
        // Lock under a name nobody scans, then rename: a `.lock` file is never seen unlocked while
        // its owner starts, and the directory exists only once the lock does.
        let pending = incoming_root.join(format!("{id}.locking"));
        let lock = std::fs::File::create(&pending)?;
        lock.try_lock().map_err(|e| io::Error::other(format!("locking {}: {e}", pending.display())))?;
        std::fs::rename(&pending, incoming_root.join(format!("{id}.lock")))?;
        let incoming = incoming_root.join(&id);
        std::fs::create_dir_all(&incoming)?;
        Ok(Storage { root, fsync, incoming, _lock: std::sync::Arc::new(lock) })
    }

    /// The storage root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Absolute path of a stored instance from its index path.
    pub fn resolve(&self, relative_path: &str) -> PathBuf {
        self.root.join(relative_path)
    }

    /// Starts a Part 10 file for an instance announced by a C-STORE-RQ.
    ///
    /// # Errors
    /// I/O errors creating the file or writing the header.
    pub async fn begin(&self, announced: &Announced<'_>) -> Result<PendingFile, StorageError> {
        let path = self.incoming.join(format!("{}.part", Uuid::new_v4().simple()));
        let file = tokio::fs::File::create(&path).await?;
        let temp = TempFile { path: Some(path) };
        let mut writer = BufWriter::with_capacity(WRITE_BUFFER, file);
        writer.write_all(&part10_header(announced)?).await?;
        Ok(PendingFile {
            writer,
            temp,
            fsync: self.fsync,
            sop_class_uid: announced.sop_class_uid.to_owned(),
            sop_instance_uid: announced.sop_instance_uid.to_owned(),
        })
    }

    /// Links a received file to `[sites/<site>/]studies/<study>/<series>/<sop>.dcm`
    /// ([`firstread_sites::folder`]: no prefix for the default site) unless a file is already
    /// there (first received wins), then makes the directory entry durable.
    ///
    /// # Errors
    /// I/O errors (also for a `site` that is no valid site name); the temporary file is removed
    /// in every case.
    pub async fn place(&self, received: Received, site: &str) -> Result<Placed, StorageError> {
        if !firstread_sites::is_valid(site) {
            return Err(StorageError::Io(io::Error::other(format!("{site:?} is no site name"))));
        }
        let a = &received.attributes;
        let relative_path = format!(
            "{}studies/{}/{}/{}.dcm",
            firstread_sites::folder(site),
            a.study_instance_uid,
            a.series_instance_uid,
            a.sop_instance_uid
        );
        let target = self.root.join(&relative_path);
        let fsync = self.fsync;
        let root = self.root.clone();
        let mut temp = received.temp;
        let Some(source) = temp.path.take() else {
            return Err(StorageError::Io(io::Error::other("temporary file already consumed")));
        };
        let created = tokio::task::spawn_blocking(move || place_blocking(&root, &source, &target, fsync))
            .await
            .map_err(io::Error::other)??;
        Ok(Placed { relative_path, created })
    }

    /// Removes a placed file (used when the index keeps an earlier copy of the instance).
    ///
    /// # Errors
    /// I/O errors other than "not found".
    pub async fn remove(&self, relative_path: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.root.join(relative_path)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Removes the `incoming/<id>/` directories whose lock no live process holds, and stray files.
/// Returns how many partial instances were removed.
fn remove_abandoned(incoming_root: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(incoming_root)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "lock") {
            let Ok(lock) = std::fs::OpenOptions::new().write(true).open(&path) else { continue };
            if lock.try_lock().is_ok() {
                let dir = path.with_extension("");
                removed += std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::remove_file(&path);
            }
        } else if path.extension().is_some_and(|e| e == "locking") {
            // a process starting right now (or one that died while starting): leave it
        } else if path.is_file() {
            // a partial instance from before per-process directories
            let _ = std::fs::remove_file(&path);
            removed += 1;
        } else if path.is_dir() && !path.with_extension("lock").exists() {
            removed += std::fs::read_dir(&path).map(|d| d.count()).unwrap_or(0);
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    Ok(removed)
}

fn place_blocking(root: &Path, source: &Path, target: &Path, fsync: bool) -> io::Result<bool> {
    let result = (|| {
        let dir = target.parent().ok_or_else(|| io::Error::other("no parent directory"))?;
        let new_dir = !dir.exists();
        if new_dir {
            std::fs::create_dir_all(dir)?;
        }
        let created = match std::fs::hard_link(source, target) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        };
        if fsync && created {
            sync_dir(dir)?;
            if new_dir {
                // New study/series directories must survive a crash too.
                let mut d = dir;
                while let Some(parent) = d.parent() {
                    sync_dir(parent)?;
                    if parent == root {
                        break;
                    }
                    d = parent;
                }
            }
        }
        Ok(created)
    })();
    let _ = std::fs::remove_file(source);
    result
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// 128-byte preamble, "DICM", and the File Meta Information group (PS3.10 7.1).
fn part10_header(a: &Announced<'_>) -> Result<Vec<u8>, StorageError> {
    let mut builder = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(a.sop_class_uid)
        .media_storage_sop_instance_uid(a.sop_instance_uid)
        .transfer_syntax(a.transfer_syntax_uid)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    let ae = a.source_ae_title.trim();
    if !ae.is_empty() {
        builder = builder.source_application_entity_title(ae);
    }
    let meta = builder.build().map_err(|e| io::Error::other(e.to_string()))?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(out)
}

/// An instance file being written. Dropping it deletes the file.
#[derive(Debug)]
pub struct PendingFile {
    writer: BufWriter<tokio::fs::File>,
    temp: TempFile,
    fsync: bool,
    sop_class_uid: String,
    sop_instance_uid: String,
}

impl PendingFile {
    /// Appends data set bytes.
    ///
    /// # Errors
    /// I/O errors (disk full...).
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes).await
    }

    /// Flushes and (when configured) fsyncs the file, reads its attributes back and checks them
    /// against the C-STORE-RQ.
    ///
    /// # Errors
    /// `Io` for disk errors, `Attributes` for an unparsable or unindexable data set, `Mismatch`
    /// when the data set's SOP Class/Instance UID differs from the command's.
    pub async fn finish(mut self) -> Result<Received, StorageError> {
        self.writer.flush().await?;
        let file = self.writer.get_mut();
        if self.fsync {
            file.sync_all().await?;
        }
        let size_bytes = file.metadata().await?.len();
        let path = self.temp.path.clone().ok_or_else(|| io::Error::other("temporary file already consumed"))?;
        let attributes = tokio::task::spawn_blocking(move || attributes::read_attributes(&path))
            .await
            .map_err(io::Error::other)??;
        if attributes.sop_instance_uid != self.sop_instance_uid {
            return Err(StorageError::Mismatch("SOP Instance UID"));
        }
        if attributes.sop_class_uid != self.sop_class_uid {
            return Err(StorageError::Mismatch("SOP Class UID"));
        }
        Ok(Received { temp: self.temp, attributes, size_bytes })
    }
}

/// A temporary file removed on drop unless its path was taken.
#[derive(Debug)]
struct TempFile {
    path: Option<PathBuf>,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}
