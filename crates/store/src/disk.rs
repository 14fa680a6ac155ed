//! The disk guard: refuses new work when the storage root's filesystem is nearly full, with
//! hysteresis (it trips at the high watermark and accepts again below the low one), so that a
//! full disk never turns into failures half-way through a study.
//!
//! The usage is `statvfs(2)` on the storage root, read at every check (a microsecond: each new
//! association and each STOW-RS request asks). Instances already in flight are not stopped by
//! the guard: if the disk fills under them, their write fails, the temporary file is removed and
//! they are answered A700 (out of resources), so nothing acknowledged is ever lost.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Watermarks of the storage filesystem's usage, in percent of its size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watermarks {
    /// At or above this, new associations and STOW-RS requests are refused.
    pub high_pct: f64,
    /// Below this, they are accepted again.
    pub low_pct: f64,
}

/// The storage filesystem's usage and the guard's state after a check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskState {
    /// Used share of the filesystem (%): (size - available to us) / size.
    pub used_pct: f64,
    /// Bytes available to this process.
    pub available_bytes: u64,
    /// Whether new work is refused.
    pub refusing: bool,
}

/// The guard of one storage root.
#[derive(Debug)]
pub struct DiskGuard {
    root: PathBuf,
    marks: Watermarks,
    refusing: AtomicBool,
}

impl DiskGuard {
    /// A guard of the filesystem holding `root`.
    pub fn new(root: impl Into<PathBuf>, marks: Watermarks) -> Self {
        DiskGuard { root: root.into(), marks, refusing: AtomicBool::new(false) }
    }

    /// Reads the usage and moves the state: refusing from the high watermark on, accepting again
    /// below the low one. Logs and counts each change. An unreadable or read-only filesystem
    /// refuses.
    pub fn check(&self) -> DiskState {
        let state = match usage(&self.root) {
            Ok((used_pct, available_bytes)) => {
                let was = self.refusing.load(Ordering::Relaxed);
                let refusing = if was { used_pct >= self.marks.low_pct } else { used_pct >= self.marks.high_pct };
                DiskState { used_pct, available_bytes, refusing }
            }
            Err(e) => {
                tracing::warn!(root = %self.root.display(), error = %e, "storage filesystem unreadable: refusing new work");
                DiskState { used_pct: 100.0, available_bytes: 0, refusing: true }
            }
        };
        let was = self.refusing.swap(state.refusing, Ordering::Relaxed);
        metrics::gauge!("firstread_storage_used_ratio").set(state.used_pct / 100.0);
        metrics::gauge!("firstread_disk_guard_refusing").set(if state.refusing { 1.0 } else { 0.0 });
        if state.refusing != was {
            if state.refusing {
                metrics::counter!("firstread_disk_guard_trips_total").increment(1);
                tracing::warn!(
                    used_pct = format!("{:.1}", state.used_pct),
                    high_pct = self.marks.high_pct,
                    "storage above the high watermark: new associations and STOW-RS requests are refused"
                );
            } else {
                tracing::info!(
                    used_pct = format!("{:.1}", state.used_pct),
                    low_pct = self.marks.low_pct,
                    "storage below the low watermark: accepting again"
                );
            }
        }
        state
    }
}

/// (used % of its blocks or of its inodes, whichever is fuller; bytes available to an
/// unprivileged writer) of the filesystem holding `path`.
fn usage(path: &Path) -> std::io::Result<(f64, u64)> {
    let s = rustix::fs::statvfs(path)?;
    if s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return Err(std::io::Error::other("the filesystem is mounted read-only"));
    }
    let size = s.f_blocks.saturating_mul(s.f_frsize);
    let available = s.f_bavail.saturating_mul(s.f_frsize);
    let pct =
        |total: u64, free: u64| if total == 0 { 0.0 } else { 100.0 * total.saturating_sub(free) as f64 / total as f64 };
    // many small files can use up the inodes before the blocks: the fuller of the two counts
    Ok((pct(size, available).max(pct(s.f_files, s.f_favail)), available))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_at_the_high_watermark_and_accepts_again_below_the_low_one() {
        let dir = tempfile::tempdir().expect("dir");
        let (used, _) = usage(dir.path()).expect("statvfs");
        assert!((0.0..=100.0).contains(&used), "{used}");
        // the real filesystem's usage against watermarks around it
        let guard = |high: f64, low: f64| DiskGuard::new(dir.path(), Watermarks { high_pct: high, low_pct: low });
        let below = guard(used + 5.0, used + 2.0);
        assert!(!below.check().refusing);
        let above = guard((used - 1.0).max(0.0), (used - 3.0).max(0.0));
        assert!(above.check().refusing);
        // tripped: stays refusing until below the low watermark
        let hysteresis = guard((used - 1.0).max(0.0), used - 0.5);
        assert!(hysteresis.check().refusing);
        let between = DiskGuard {
            root: dir.path().to_path_buf(),
            marks: Watermarks { high_pct: used + 5.0, low_pct: (used - 1.0).max(0.0) },
            refusing: AtomicBool::new(true),
        };
        assert!(between.check().refusing, "between the marks a tripped guard keeps refusing");
        let released = DiskGuard {
            root: dir.path().to_path_buf(),
            marks: Watermarks { high_pct: used + 5.0, low_pct: used + 2.0 },
            refusing: AtomicBool::new(true),
        };
        assert!(!released.check().refusing, "below the low watermark it accepts again");
        // a root that does not exist refuses
        assert!(
            DiskGuard::new("/nonexistent/firstread", Watermarks { high_pct: 90.0, low_pct: 85.0 }).check().refusing
        );
    }
}
