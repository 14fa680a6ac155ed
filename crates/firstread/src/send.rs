//! `firstread send`: a storescu-like sender. Walks files and folders, keeps DICOM Part 10 files
//! (PS3.10 7.1; others are skipped with a note), and sends them with C-STORE (PS3.7 9.1.1) over
//! one association (`firstread_dimse::scu`), one data set in memory at a time, with a progress
//! bar on stderr and a summary on stdout.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use firstread_dimse::scu::{self, Destination, Instance, Part10Header, ScuConfig, StoreScu};
use indicatif::{ProgressBar, ProgressStyle};

/// Media Storage Directory Storage (PS3.10 8.6, DICOMDIR): a file-set index, not an instance.
const MEDIA_STORAGE_DIRECTORY: &str = "1.2.840.10008.1.3.10";

/// The Part 10 files found (PS3.10 7.1), and what was skipped with why.
#[derive(Debug, Default)]
pub struct FileSet {
    /// Files to send, in walk order (sorted within each folder), with their File Meta Information.
    pub files: Vec<(PathBuf, Part10Header)>,
    /// Paths left out, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Walks `paths` (files, or folders recursively; symbolic links to folders are not followed)
/// and reads the File Meta Information of each file (PS3.10 7.1).
pub fn collect_files(paths: &[PathBuf]) -> FileSet {
    let mut set = FileSet::default();
    for path in paths {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => walk(path, &mut set),
            Ok(_) => consider(path, &mut set),
            Err(e) => set.skipped.push((path.clone(), e.to_string())),
        }
    }
    set
}

fn walk(dir: &Path, set: &mut FileSet) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            set.skipped.push((dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, set),
            Ok(t) if t.is_symlink() && path.is_dir() => {
                set.skipped.push((path, "symbolic link to a folder (not followed)".into()));
            }
            Ok(_) => consider(&path, set),
            Err(e) => set.skipped.push((path, e.to_string())),
        }
    }
}

fn consider(path: &Path, set: &mut FileSet) {
    match scu::read_part10_header(path) {
        Ok(h) if h.sop_class_uid == MEDIA_STORAGE_DIRECTORY => {
            set.skipped.push((path.to_path_buf(), "DICOMDIR (a file-set index) is not sent".into()));
        }
        Ok(h) => set.files.push((path.to_path_buf(), h)),
        Err(e) => set.skipped.push((path.to_path_buf(), e.to_string())),
    }
}

/// One instance that the peer did not take.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The file.
    pub path: PathBuf,
    /// The C-STORE-RSP Status (PS3.7 9.1.1.1.9), or the local status when not sent; `None` when
    /// the file could not be read.
    pub status: Option<u16>,
    /// Error Comment or the reason.
    pub comment: String,
}

/// What a send did: C-STORE outcomes (PS3.7 9.1.1.1.9) and association failures (PS3.8 7.3).
#[derive(Debug, Default)]
pub struct SendReport {
    /// Instances the peer took (Success or Warning, PS3.4 B.2.3).
    pub sent: usize,
    /// Of those, how many with a Warning status (Bxxx).
    pub warnings: usize,
    /// Instances refused by the peer, not sent, or unreadable.
    pub failed: Vec<Failure>,
    /// Files not attempted because the association failed before them.
    pub not_attempted: usize,
    /// Why the association failed mid-way, if it did.
    pub association_error: Option<String>,
}

impl SendReport {
    /// Whether every instance was taken (Success or Warning, PS3.4 B.2.3).
    pub fn all_sent(&self) -> bool {
        self.failed.is_empty() && self.not_attempted == 0 && self.association_error.is_none()
    }

    /// The human summary: counts, then each failure with its Status and Error Comment
    /// (PS3.7 9.3.1.2).
    pub fn render(&self) -> String {
        let mut out = format!("{} sent, {} with warnings, {} failed", self.sent, self.warnings, self.failed.len());
        if self.not_attempted > 0 {
            let _ = write!(out, ", {} not attempted", self.not_attempted);
        }
        out.push('\n');
        if let Some(e) = &self.association_error {
            let _ = writeln!(out, "association failed: {e}");
        }
        for f in &self.failed {
            let status = f.status.map(|s| format!("status {s:04X}")).unwrap_or_else(|| "not sent".into());
            let _ = writeln!(out, "  {}: {status}: {}", f.path.display(), f.comment);
        }
        out
    }
}

/// Sends `files` over one association to `dest`, loading each data set just before its
/// C-STORE-RQ. `progress` shows a bar on stderr (hidden when stderr is not a terminal).
///
/// # Errors
/// When the association cannot be set up (connection, timeout, A-ASSOCIATE-RJ, no accepted
/// context; PS3.8 7.1). Failures after that are in the report.
pub async fn send_files(
    files: &[(PathBuf, Part10Header)],
    dest: &Destination,
    config: &ScuConfig,
    progress: bool,
) -> anyhow::Result<SendReport> {
    let mut report = SendReport::default();
    if files.is_empty() {
        return Ok(report);
    }
    let pairs = files.iter().map(|(_, h)| (h.sop_class_uid.as_str(), h.transfer_syntax_uid.as_str()));
    let mut scu = StoreScu::connect(dest, config, pairs).await.with_context(|| format!("associating with {dest}"))?;
    let bar = if progress { ProgressBar::new(files.len() as u64) } else { ProgressBar::hidden() };
    if let Ok(style) = ProgressStyle::with_template("{elapsed_precise} {wide_bar} {pos}/{len} {per_sec} {msg}") {
        bar.set_style(style);
    }
    for (i, (path, _)) in files.iter().enumerate() {
        bar.set_message(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        let instance = match Instance::from_part10_file(path) {
            Ok(instance) => instance,
            Err(e) => {
                report.failed.push(Failure { path: path.clone(), status: None, comment: e.to_string() });
                bar.inc(1);
                continue;
            }
        };
        match scu.store(&instance).await {
            Ok(result) if result.is_success_or_warning() => {
                report.sent += 1;
                if result.is_warning() {
                    report.warnings += 1;
                }
            }
            Ok(result) => report.failed.push(Failure {
                path: path.clone(),
                status: Some(result.status),
                comment: result.comment.unwrap_or_default(),
            }),
            Err(e) => {
                report.association_error = Some(e.to_string());
                report.not_attempted = files.len() - i;
                bar.abandon();
                scu.abort().await;
                return Ok(report);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Err(e) = scu.release().await {
        tracing::warn!(error = %e, "A-RELEASE failed after all responses");
    }
    Ok(report)
}

/// `firstread send PATHS... --to AE@host:port`: collects, sends, prints the summary.
///
/// # Errors
/// When nothing could be sent (no Part 10 file, association refused) or any instance failed,
/// so that the exit status is non-zero.
pub async fn run(paths: &[PathBuf], dest: &Destination, config: &ScuConfig) -> anyhow::Result<()> {
    let set = collect_files(paths);
    for (path, why) in &set.skipped {
        eprintln!("skipping {}: {why}", path.display());
    }
    if set.files.is_empty() {
        anyhow::bail!("no DICOM Part 10 file to send");
    }
    let report = send_files(&set.files, dest, config, true).await?;
    print!("{}", report.render());
    if !report.all_sent() {
        let failed = report.failed.len() + report.not_attempted;
        anyhow::bail!("{failed} of {} instance(s) not stored by {dest}", set.files.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_part10_files_and_notes_the_rest() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/ct");
        let set = collect_files(&[root.join("lung-dx-a0002-b40f"), root.join("README.md"), root.join("missing")]);
        assert_eq!(set.files.len(), 30);
        assert!(set.files.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        assert_eq!(set.skipped.len(), 2);
        assert!(set.skipped[0].1.contains("not a DICOM Part 10 file"), "{:?}", set.skipped);
    }

    #[test]
    fn report_lists_failures() {
        let report = SendReport {
            sent: 3,
            warnings: 1,
            failed: vec![Failure { path: "a/1.dcm".into(), status: Some(0xA700), comment: "disk full".into() }],
            not_attempted: 0,
            association_error: None,
        };
        let text = report.render();
        assert!(text.starts_with("3 sent, 1 with warnings, 1 failed\n"), "{text}");
        assert!(text.contains("a/1.dcm: status A700: disk full"), "{text}");
        assert!(!report.all_sent());
        assert!(SendReport::default().all_sent());
    }
}
