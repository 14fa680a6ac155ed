//! The disk guard on a small filesystem made by the test (a 64 MiB tmpfs; the test runs as root,
//! as CI does): above the high watermark, dcmtk `storescu` gets A-ASSOCIATE-RJ transient "local
//! limit exceeded", STOW-RS 503 with Retry-After and `/readyz` 503; an instance already in flight
//! when the disk fills is answered A700 and leaves no partial file, and the same association
//! stores it once there is room; below the low watermark everything is accepted again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use firstread_e2e::*;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("storage");
        std::fs::create_dir_all(&path).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path, _dir: dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// (used %, available bytes) of the filesystem holding `path`, as `df` reports them.
fn usage(path: &Path) -> (f64, u64) {
    let out = std::process::Command::new("df").args(["-B1", "--output=size,avail"]).arg(path).output().expect("df");
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<u64> =
        text.lines().nth(1).unwrap_or("").split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let (size, avail) = (numbers[0], numbers[1]);
    (100.0 * (size - avail) as f64 / size as f64, avail)
}

/// Writes `bytes` of filler (or until the disk is full, when `bytes` is `None`).
fn fill(path: &Path, bytes: Option<u64>) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0u64;
    while bytes.is_none_or(|b| written < b) {
        let n = bytes.map_or(chunk.len() as u64, |b| (b - written).min(chunk.len() as u64)) as usize;
        if f.write_all(&chunk[..n]).is_err() {
            break;
        }
        written += n as u64;
    }
    let _ = f.sync_all();
}

fn storescu(port: u16, files: &[PathBuf]) -> std::process::Output {
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "FIRSTREAD", "-aet", "CT_DISK", "127.0.0.1", &port.to_string()]).args(files);
    run(cmd)
}

fn partial_files(root: &Path) -> Vec<PathBuf> {
    files_under(&root.join("incoming")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "part")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_watermark_senders_are_refused_and_nothing_acknowledged_is_lost() {
    let fs = Tmpfs::mount(64);
    let root = fs.path.clone();
    let node = TestNode::start(|c| {
        c.storage.root = root.clone();
        c.storage.high_watermark_percent = 65.0;
        c.storage.low_watermark_percent = 50.0;
        c.assembly.stable_after = Duration::from_millis(500);
    })
    .await;
    let port = node.port();
    let files = sample_series("");
    let out = tokio::task::spawn_blocking({
        let files = files.clone();
        move || storescu(port, &files)
    })
    .await
    .expect("send");
    assert!(out.status.success(), "below the watermark: {}", String::from_utf8_lossy(&out.stderr));
    let analysed = eventually_async(Duration::from_secs(120), || async {
        node.count("SELECT count(*) FROM jobs WHERE kind = 'analysis' AND state = 'done'").await == 1
    })
    .await;
    assert!(analysed);
    let (used, _) = usage(&root);
    assert!(used < 50.0, "the sample and its results take {used:.1} % of 64 MiB");

    // fill to 75 %: new work refused
    let filler = root.join("filler");
    let (_, avail) = usage(&root);
    let size = 64u64 << 20;
    fill(&filler, Some(((0.75 - (size - avail) as f64 / size as f64) * size as f64) as u64));
    let (used, _) = usage(&root);
    assert!(used > 65.0, "{used:.1} %");
    let out = tokio::task::spawn_blocking({
        let files = files.clone();
        move || storescu(port, &files[..1])
    })
    .await
    .expect("send");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "above the watermark the association is refused");
    assert!(stderr.contains("Local Limit Exceeded"), "A-ASSOCIATE-RJ transient, local limit exceeded:\n{stderr}");
    let http = reqwest::Client::new();
    let base = format!("http://{}", node.node.http_addr.expect("HTTP"));
    let stow = http
        .post(format!("{base}/dicom-web/studies"))
        .bearer_auth(TEST_TOKEN)
        .header("content-type", "multipart/related; type=\"application/dicom\"; boundary=b")
        .body("--b--\r\n")
        .send()
        .await
        .expect("stow");
    assert_eq!(stow.status().as_u16(), 503);
    assert_eq!(stow.headers()["retry-after"], "60");
    assert_eq!(http.get(format!("{base}/readyz")).send().await.expect("readyz").status().as_u16(), 503);
    let trips = http.get(format!("{base}/metrics")).bearer_auth(TEST_TOKEN).send().await.expect("metrics");
    let metrics = trips.text().await.expect("text");
    assert!(metrics.contains("firstread_disk_guard_refusing 1"), "{metrics}");

    // between the watermarks (60 %) a tripped guard still refuses
    std::fs::remove_file(&filler).expect("rm");
    let (_, avail) = usage(&root);
    fill(&filler, Some(((0.60 - (size - avail) as f64 / size as f64) * size as f64) as u64));
    let out = tokio::task::spawn_blocking({
        let files = files.clone();
        move || storescu(port, &files[..1])
    })
    .await
    .expect("send");
    assert!(!out.status.success(), "between the watermarks: still refused");

    // below the low watermark: accepted again; an association opened now meets a full disk
    std::fs::remove_file(&filler).expect("rm");
    let ct = "1.2.840.10008.5.1.4.1.1.2";
    let mut scu = RawScu::connect(node.addr(), "FIRSTREAD", &[(ct, "1.2.840.10008.1.2.1")]).await.expect("associate");
    fill(&filler, None);
    let (study, series) = ("2.25.71", "2.25.71.1");
    let sop = "2.25.71.1.1";
    let data = tiny_ct(study, series, sop, 0.0);
    let (status, comment) = scu.store(1, ct, sop, &data).await;
    assert_eq!(status, 0xA700, "a full disk: out of resources, not acknowledged ({comment:?})");
    assert!(partial_files(&root).is_empty(), "no partial file: {:?}", partial_files(&root));
    assert_eq!(node.count("SELECT count(*) FROM instances WHERE sop_instance_uid = '2.25.71.1.1'").await, 0);
    // room again: the same association stores it
    std::fs::remove_file(&filler).expect("rm");
    let (status, comment) = scu.store(3, ct, sop, &data).await;
    assert_eq!(status, 0, "{comment:?}");
    scu.release().await;
    assert_eq!(node.count("SELECT count(*) FROM instances WHERE sop_instance_uid = '2.25.71.1.1'").await, 1);
    let out = tokio::task::spawn_blocking(move || storescu(port, &files[..1])).await.expect("send");
    assert!(out.status.success(), "accepted again: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(http.get(format!("{base}/readyz")).send().await.expect("readyz").status().as_u16(), 200);
}
