//! Slices decoded while the study arrives, so that the volume is ready when the last slice lands.
//!
//! The receiver hands each stored CT instance's path to [`SliceCache::prefetch`] (off the
//! C-STORE-RSP path, on a thread of its own); it reads the header and decodes the pixel data into
//! HU in the canonical orientation of that slice's own Image Orientation (Patient), exactly as
//! [`crate::build_study_volume`] would. [`crate::build_study_volume_with`] then takes the slices it
//! finds here (same file, same grid, same flips, same padding HU) and decodes only the others.
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
    pub header: InstanceHeader,
    /// Decoded with this grid and frame, and `padding_hu` for padding voxels; `None` when the
    /// slice is not axial (its header alone is kept).
    pub pixels: Option<Pixels>,
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
    /// Arrival order, for dropping the oldest (paths already taken are skipped).
    order: VecDeque<PathBuf>,
    bytes: usize,
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
        let header = read_header(path)?;
        let pixels = match grid_of(&header).and_then(|grid| axial_frame(&grid).map(|frame| (grid, frame))) {
            Ok((grid, frame)) => {
                let mut hu = vec![0f32; grid.rows * grid.cols];
                let target = SliceTarget { grid: &grid, frame: &frame, padding_hu: self.padding_hu };
                let notes = decode_slice_hu(&header, &target, &mut hu)?;
                Some(Pixels { grid, frame, padding_hu: self.padding_hu, hu, notes })
            }
            // not an axial image: the builder skips or refuses its series from the header alone
            Err(_) => None,
        };
        let bytes = pixels.as_ref().map_or(0, |p| p.hu.len() * std::mem::size_of::<f32>());
        if bytes > self.budget_bytes {
            return Ok(());
        }
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while inner.bytes + bytes > self.budget_bytes {
            let Some(oldest) = inner.order.pop_front() else { break };
            if let Some(dropped) = inner.slices.remove(&oldest) {
                inner.bytes -= dropped.pixels.map_or(0, |p| p.hu.len() * std::mem::size_of::<f32>());
            }
        }
        if let Some(old) = inner.slices.insert(path.to_owned(), Prefetched { header, pixels }) {
            inner.bytes -= old.pixels.map_or(0, |p| p.hu.len() * std::mem::size_of::<f32>());
        } else {
            inner.order.push_back(path.to_owned());
        }
        // the paths of slices already taken, once they outnumber the held ones
        if inner.order.len() > 2 * inner.slices.len() + 64 {
            let Inner { slices, order, .. } = &mut *inner;
            order.retain(|p| slices.contains_key(p));
        }
        inner.bytes += bytes;
        Ok(())
    }

    /// The header of `path`, when cached.
    pub(crate) fn header(&self, path: &Path) -> Option<InstanceHeader> {
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.slices.get(path).map(|p| p.header.clone())
    }

    /// Takes the decoded pixels of `path` out of the cache, when held.
    pub(crate) fn take_pixels(&self, path: &Path) -> Option<Pixels> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let taken = inner.slices.remove(path)?;
        let pixels = taken.pixels?;
        inner.bytes -= pixels.hu.len() * std::mem::size_of::<f32>();
        Some(pixels)
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
        std::thread::Builder::new().name("slice-prefetch".into()).spawn(move || {
            // decoding ahead takes what CPU the receiver leaves: on Linux the nice value is per
            // thread (setpriority(2) on the calling thread's id), and 19 yields to the
            // associations' threads (the ingest rate with it at 0 fell by a third on 2 cores)
            #[cfg(target_os = "linux")]
            if let Err(e) = rustix::process::setpriority_process(None, 19) {
                tracing::debug!(error = %e, "slice prefetch: nice value not set");
            }
            for path in paths {
                // an unreadable or undecodable file is the volume builder's to report
                let _ = cache.prefetch(&path);
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
