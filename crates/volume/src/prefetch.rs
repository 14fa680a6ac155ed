//! Slices decoded while the study arrives, so that the volume is ready when the last slice lands.
//!
//! The receiver hands each stored CT instance's path to [`SliceCache::prefetch`] (off the
//! C-STORE-RSP path, on a thread of its own); it reads the header and decodes the pixel data into
//! HU in the canonical orientation of that slice's own Image Orientation (Patient), exactly as
//! [`crate::build_study_volume`] would. [`crate::build_study_volume_with`] then takes the slices it
//! finds here (same file, unchanged in length and modification time since, same grid, same flips,
//! same padding HU) and decodes only the others. Only axial images whose pixels fit the budget are
//! decoded ahead.
//!
//! Bounded: at most `budget_bytes` of decoded HU are held; beyond it the oldest slices are
//! dropped (they are decoded from their files again when the volume is built). A slice taken by a
//! volume leaves the cache. Nothing here is needed for a correct volume: a slice that is missing,
//! dropped or decoded differently is read from its file.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::geometry::{axial_frame, grid_of, AxialFrame, ImageGrid};
use crate::header::{read_header, InstanceHeader};
use crate::pixels::{decode_slice_hu, SliceNotes, SliceTarget};

/// One slice decoded ahead.
#[derive(Debug)]
pub(crate) struct Prefetched {
    header: InstanceHeader,
    pixels: Pixels,
    /// The file as it was decoded (length, modification time): a file replaced at the same
    /// path since is read again.
    file: FileStamp,
    /// Its place in the arrival order.
    seq: u64,
}

type FileStamp = (u64, Option<std::time::SystemTime>);

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()))
}

#[derive(Debug)]
pub(crate) struct Pixels {
    pub grid: ImageGrid,
    pub frame: AxialFrame,
    pub padding_hu: f32,
    /// HU, canonical `[rows, cols]`.
    pub hu: Vec<f32>,
    pub notes: SliceNotes,
}

impl Pixels {
    fn bytes(&self) -> usize {
        self.hu.len() * std::mem::size_of::<f32>()
    }

    /// Whether these pixels are what decoding for `target` would give.
    pub(crate) fn fit(&self, target: &SliceTarget<'_>) -> bool {
        self.grid.rows == target.grid.rows
            && self.grid.cols == target.grid.cols
            && self.frame.flip_rows == target.frame.flip_rows
            && self.frame.flip_cols == target.frame.flip_cols
            && self.padding_hu.to_bits() == target.padding_hu.to_bits()
    }
}

/// Decoded slices by file path, bounded in bytes (see the module doc).
#[derive(Debug)]
pub struct SliceCache {
    budget_bytes: usize,
    padding_hu: f32,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    slices: HashMap<PathBuf, Prefetched>,
    /// Arrival order (path and `Prefetched::seq`), for dropping the oldest; entries whose slice
    /// was taken or replaced since are skipped.
    order: VecDeque<(PathBuf, u64)>,
    next_seq: u64,
    bytes: usize,
}

impl Inner {
    fn holds(&self, (path, seq): &(PathBuf, u64)) -> bool {
        self.slices.get(path).is_some_and(|p| p.seq == *seq)
    }

    fn remove(&mut self, path: &Path) -> Option<Prefetched> {
        let removed = self.slices.remove(path)?;
        self.bytes -= removed.pixels.bytes();
        Some(removed)
    }
}

/// What the cache holds, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheUse {
    /// Slices held.
    pub slices: usize,
    /// Bytes of decoded HU held.
    pub bytes: usize,
}

impl SliceCache {
    /// A cache of at most `budget_bytes` of decoded HU; padding voxels become `padding_hu` (the
    /// model contract's, [`crate::VolumeContract::padding_hu`]).
    pub fn new(budget_bytes: usize, padding_hu: f32) -> Self {
        SliceCache { budget_bytes, padding_hu, inner: Mutex::new(Inner::default()) }
    }

    /// Reads and decodes `path` into the cache. Blocking (file I/O and decoding): call it from a
    /// thread that is not answering a peer.
    ///
    /// # Errors
    /// The reason the file could not be read or decoded; nothing is cached then, and the volume
    /// builder meets the same error when it reads the file.
    pub fn prefetch(&self, path: &Path) -> Result<(), crate::Refusal> {
        let file = stamp(path);
        let header = read_header(path)?;
        // only axial images whose pixels fit the budget (Rows and Columns come from the peer:
        // nothing is allocated for a grid the cache could not hold); the builder reads the
        // others from their files, and skips or refuses their series from the header alone
        let Ok(grid) = grid_of(&header) else { return Ok(()) };
        let Ok(frame) = axial_frame(&grid) else { return Ok(()) };
        let fits = grid.rows.checked_mul(grid.cols).and_then(|n| n.checked_mul(std::mem::size_of::<f32>()));
        let Some(bytes) = fits.filter(|&b| b > 0 && b <= self.budget_bytes) else { return Ok(()) };
        let Some(file) = file else { return Ok(()) };
        let mut hu = vec![0f32; grid.rows * grid.cols];
        let target = SliceTarget { grid: &grid, frame: &frame, padding_hu: self.padding_hu };
        let notes = decode_slice_hu(&header, &target, &mut hu)?;
        let pixels = Pixels { grid, frame, padding_hu: self.padding_hu, hu, notes };
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.remove(path);
        while inner.bytes + bytes > self.budget_bytes {
            let Some(oldest) = inner.order.pop_front() else { break };
            if inner.holds(&oldest) {
                inner.remove(&oldest.0);
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.slices.insert(path.to_owned(), Prefetched { header, pixels, file, seq });
        inner.order.push_back((path.to_owned(), seq));
        inner.bytes += bytes;
        // the entries of slices taken or replaced, once they outnumber the held ones
        if inner.order.len() > 2 * inner.slices.len() + 64 {
            let mut order = std::mem::take(&mut inner.order);
            order.retain(|e| inner.holds(e));
            inner.order = order;
        }
        Ok(())
    }

    /// The header of `path`, when cached for the file as it is now.
    pub(crate) fn header(&self, path: &Path) -> Option<InstanceHeader> {
        let now = stamp(path)?;
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.slices.get(path).filter(|p| p.file == now).map(|p| p.header.clone())
    }

    /// Takes the decoded pixels of `path` out of the cache, when held for the file as it is now
    /// and `fit` for the volume being built (others stay).
    pub(crate) fn take_pixels(&self, path: &Path, fit: impl Fn(&Pixels) -> bool) -> Option<Pixels> {
        let now = stamp(path)?;
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = inner.slices.get(path)?;
        if held.file != now {
            inner.remove(path);
            return None;
        }
        if !fit(&held.pixels) {
            return None;
        }
        inner.remove(path).map(|p| p.pixels)
    }

    /// What the cache holds now.
    pub fn usage(&self) -> CacheUse {
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        CacheUse { slices: inner.slices.len(), bytes: inner.bytes }
    }
}

/// The receiver's side of a [`SliceCache`]: paths handed to one decoding thread through a
/// bounded queue. [`Prefetcher::offer`] never waits: when the thread is behind by `queue` paths,
/// the path is not decoded ahead (the volume builder reads it from its file).
#[derive(Debug, Clone)]
pub struct Prefetcher {
    to_thread: std::sync::mpsc::SyncSender<PathBuf>,
}

impl Prefetcher {
    /// Starts the decoding thread for `cache`; it ends when every [`Prefetcher`] clone is dropped.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(cache: std::sync::Arc<SliceCache>, queue: usize) -> std::io::Result<Prefetcher> {
        let (to_thread, paths) = std::sync::mpsc::sync_channel::<PathBuf>(queue);
        // the global rayon pool (dicom-pixeldata decodes with it) is started here, not by the
        // decoding thread, whose nice value its threads would inherit
        let _ = rayon::current_num_threads();
        std::thread::Builder::new().name("slice-prefetch".into()).spawn(move || {
            // decoding ahead takes what CPU the receiver leaves: on Linux the nice value is per
            // thread (setpriority(2) on the calling thread's id), and 19 yields to the
            // associations' threads (the ingest rate with it at 0 fell by a third on 2 cores)
            #[cfg(target_os = "linux")]
            if let Err(e) = rustix::process::setpriority_process(None, 19) {
                tracing::debug!(error = %e, "slice prefetch: nice value not set");
            }
            for path in paths {
                // an unreadable or undecodable file is the volume builder's to report; a panic
                // in a decoder (peer data) costs that one slice, not the thread
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cache.prefetch(&path))) {
                    Ok(_) => {}
                    Err(_) => tracing::warn!("slice prefetch: decoding an image panicked; it is read from its file"),
                }
            }
        })?;
        Ok(Prefetcher { to_thread })
    }

    /// Hands `path` (a stored image file) to the decoding thread; `false` when the queue is full
    /// or the thread has ended.
    pub fn offer(&self, path: PathBuf) -> bool {
        self.to_thread.try_send(path).is_ok()
    }
}
