//! The C-STORE SCU (`firstread_dimse::scu`) and `firstread send` against real peers: dcmtk
//! storescp, and a pynetdicom SCP (`tests/peers/scp.py`) that records every PDU it receives and
//! answers chosen statuses.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dicom_dictionary_std::{tags, uids};
use dicom_object::open_file;
use firstread_dimse::scu::{self, Destination, Instance, ScuConfig, ScuError, StoreResult};
use firstread_e2e::*;

/// A child process killed when dropped.
struct Peer {
    child: Child,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// dcmtk storescp on a free port, writing what it receives into its own folder.
struct Storescp {
    _peer: Peer,
    dir: tempfile::TempDir,
    port: u16,
}

impl Storescp {
    fn start() -> Storescp {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut cmd = dcmtk("storescp");
        cmd.args(["-aet", "STORESCP", "-od"])
            .arg(dir.path())
            .args(["+xa", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let peer = Peer { child: cmd.spawn().expect("spawn storescp") };
        wait_listening(port);
        Storescp { _peer: peer, dir, port }
    }

    fn dest(&self) -> Destination {
        Destination { ae_title: "STORESCP".into(), host: "127.0.0.1".into(), port: self.port, tls: None }
    }

    fn files(&self) -> Vec<PathBuf> {
        files_under(self.dir.path())
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listening on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `tests/peers/scp.py` on a free port.
struct PyScp {
    _peer: Peer,
    out: PathBuf,
    _dir: tempfile::TempDir,
    port: u16,
}

impl PyScp {
    fn start(args: &[&str]) -> PyScp {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("summary.json");
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/peers/scp.py"))
            .args(["--port", &port.to_string(), "--ae", "PYSCP", "--lifetime", "120", "--out"])
            .arg(&out)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn scp.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let peer = Peer { child };
        assert_eq!(line.trim(), "ready", "scp.py did not start");
        PyScp { _peer: peer, out, _dir: dir, port }
    }

    fn dest(&self) -> Destination {
        Destination { ae_title: "PYSCP".into(), host: "127.0.0.1".into(), port: self.port, tls: None }
    }

    /// The summary once `associations` associations have ended.
    fn summary(&self, associations: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.out) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    if v["associations"].as_u64().unwrap_or(0) >= associations {
                        return v;
                    }
                }
            }
            assert!(Instant::now() < deadline, "scp.py wrote no summary for {associations} association(s)");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn load(files: &[PathBuf]) -> Vec<Instance> {
    files.iter().map(|f| Instance::from_part10_file(f).expect("sample is Part 10")).collect()
}

fn sample(variant: &str) -> Vec<Instance> {
    let files = sample_series(variant);
    assert_eq!(files.len(), 30);
    load(&files)
}

fn statuses(results: &[StoreResult]) -> Vec<u16> {
    results.iter().map(|r| r.status).collect()
}

fn fast() -> ScuConfig {
    ScuConfig {
        calling_ae_title: "FIRSTREAD".into(),
        connect_timeout: Duration::from_secs(5),
        dimse_timeout: Duration::from_secs(20),
        ..ScuConfig::default()
    }
}

/// Sends the sample in one encoding to storescp and compares the received files with the
/// originals: transfer syntax and Pixel Data value (fragments for encapsulated syntaxes).
async fn storescp_round_trip(variant: &str) {
    let scp = Storescp::start();
    let files = sample_series(variant);
    let instances = load(&files);
    let mut progress = 0;
    let results = scu::store_all(&scp.dest(), &fast(), instances, |_| progress += 1).await.expect("store_all");
    assert_eq!(progress, 30);
    assert_eq!(statuses(&results), vec![0; 30], "{results:?}");
    assert!(results.iter().all(|r| r.sent));

    let received = scp.files();
    assert_eq!(received.len(), 30, "storescp wrote {} files", received.len());
    let mut by_sop: HashMap<String, PathBuf> = HashMap::new();
    for path in received {
        let obj = open_file(&path).expect("received file parses");
        by_sop.insert(obj.meta().media_storage_sop_instance_uid().to_owned(), path);
    }
    for original_path in &files {
        let original = open_file(original_path).expect("original");
        let sop = original.meta().media_storage_sop_instance_uid().to_owned();
        let path = by_sop.get(&sop).unwrap_or_else(|| panic!("{sop} not received"));
        let copy = open_file(path).expect("copy");
        assert_eq!(copy.meta().transfer_syntax(), original.meta().transfer_syntax());
        assert_eq!(
            copy.element(tags::PIXEL_DATA).expect("pixel data").value(),
            original.element(tags::PIXEL_DATA).expect("pixel data").value(),
            "pixel data of {sop} differs ({variant})"
        );
    }
}

#[tokio::test]
async fn storescp_receives_explicit_vr_little_endian() {
    storescp_round_trip("").await;
}

#[tokio::test]
async fn storescp_receives_jpeg_lossless() {
    storescp_round_trip("-jpegll").await;
}

#[tokio::test]
async fn storescp_receives_jpeg_ls() {
    storescp_round_trip("-jpegls").await;
}

#[tokio::test]
async fn storescp_receives_jpeg_2000() {
    storescp_round_trip("-j2k").await;
}

#[test]
fn cli_sends_a_folder_to_storescp_and_skips_non_dicom() {
    let scp = Storescp::start();
    let folder = repo_root().join("data/ct/lung-dx-a0002-b40f");
    let readme = repo_root().join("data/ct/README.md");
    let out = Command::new(firstread_bin())
        .arg("send")
        .arg(&folder)
        .arg(&readme)
        .args(["--to", &format!("STORESCP@127.0.0.1:{}", scp.port)])
        .env("FIRSTREAD_LOG__FILTER", "warn")
        .output()
        .expect("run firstread send");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "firstread send failed:\n{stdout}\n{stderr}");
    assert_eq!(scp.files().len(), 30);
    assert!(stdout.contains("30 sent"), "{stdout}");
    assert!(stderr.contains("README.md"), "the skipped file is noted: {stderr}");
}

#[test]
fn cli_exits_non_zero_and_lists_failures() {
    let scp = PyScp::start(&["--statuses", "0000,A700"]);
    let files: Vec<PathBuf> = sample_series("").into_iter().take(4).collect();
    let out = Command::new(firstread_bin())
        .arg("send")
        .args(&files)
        .args(["--to", &format!("PYSCP@127.0.0.1:{}", scp.port), "--calling-ae", "CLITEST"])
        .env("FIRSTREAD_LOG__FILTER", "error")
        .output()
        .expect("run firstread send");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "failures must fail the command: {stdout}");
    assert!(stdout.contains("2 sent") && stdout.contains("2 failed"), "{stdout}");
    assert!(stdout.contains("A700") && stdout.contains("test status A700"), "{stdout}");
    assert!(stdout.contains("1-02.dcm") && stdout.contains("1-04.dcm"), "{stdout}");
    assert_eq!(scp.summary(1)["stores"].as_array().map(Vec::len), Some(4));
}

/// Checks every received P-DATA-TF against the peer's maximum and the evenness of fragments.
fn assert_pdus_fit(summary: &serde_json::Value, max: u64) -> u64 {
    let pdus = summary["pdus"].as_array().expect("pdus");
    assert!(!pdus.is_empty());
    let mut largest = 0;
    for pdu in pdus {
        let len = pdu["len"].as_u64().expect("len");
        assert!(len <= max, "a P-DATA-TF of {len} bytes exceeds {max}");
        largest = largest.max(len);
        for pdv in pdu["pdvs"].as_array().expect("pdvs") {
            let n = pdv["len"].as_u64().expect("pdv len");
            assert_eq!(n % 2, 0, "odd PDV fragment of {n} bytes: {pdv}");
        }
    }
    largest
}

/// Every instance arrived whole: byte for byte in its own transfer syntax; converted ones
/// (the peer chose the other uncompressed syntax) with the same Pixel Data, from `--save`.
fn assert_datasets_complete(summary: &serde_json::Value, instances: &[Instance], saved: Option<&Path>) {
    let stores = summary["stores"].as_array().expect("stores");
    assert_eq!(stores.len(), instances.len());
    for (n, (store, instance)) in stores.iter().zip(instances).enumerate() {
        assert_eq!(store["sop_instance"], instance.sop_instance_uid.as_str());
        let ts = store["transfer_syntax"].as_str().expect("transfer syntax");
        if ts == instance.transfer_syntax_uid {
            assert_eq!(store["dataset_len"].as_u64(), Some(instance.dataset.len() as u64));
        } else {
            let dir = saved.expect("a converted data set needs --save to be checked");
            let received = std::fs::read(dir.join(format!("{n}.raw"))).expect("saved data set");
            assert_eq!(pixel_data(&received, ts), pixel_data(&instance.dataset, &instance.transfer_syntax_uid));
        }
    }
}

fn pixel_data(dataset: &[u8], ts: &str) -> Vec<u8> {
    use dicom_transfer_syntax_registry::entries::{EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN};
    let ts = match ts {
        uids::EXPLICIT_VR_LITTLE_ENDIAN => EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        uids::IMPLICIT_VR_LITTLE_ENDIAN => IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        other => panic!("unexpected conversion to {other}"),
    };
    let obj = dicom_object::InMemDicomObject::read_dataset_with_ts(dataset, &ts).expect("data set parses");
    obj.element(tags::PIXEL_DATA).expect("pixel data").to_bytes().expect("native pixel data").into_owned()
}

#[tokio::test]
async fn pynetdicom_max_pdu_4096_gets_small_even_fragments() {
    let saved = tempfile::tempdir().expect("temp dir");
    let scp = PyScp::start(&["--max-pdu", "4096", "--save", &saved.path().display().to_string()]);
    let instances = sample("");
    let results = scu::store_all(&scp.dest(), &fast(), instances.clone(), |_| {}).await.expect("store_all");
    assert_eq!(statuses(&results), vec![0; 30]);
    let summary = scp.summary(1);
    assert_eq!(summary["released"], 1);
    let largest = assert_pdus_fit(&summary, 4096);
    assert!(largest > 4000, "fragments use the room they have: {largest}");
    assert_datasets_complete(&summary, &instances, Some(saved.path()));
}

#[tokio::test]
async fn pynetdicom_max_pdu_1018_gets_small_even_fragments() {
    let scp = PyScp::start(&["--max-pdu", "1018"]);
    let instances: Vec<Instance> = sample("-jpegll").into_iter().take(3).collect();
    let results = scu::store_all(&scp.dest(), &fast(), instances.clone(), |_| {}).await.expect("store_all");
    assert_eq!(statuses(&results), vec![0; 3]);
    let summary = scp.summary(1);
    assert_pdus_fit(&summary, 1018);
    assert_datasets_complete(&summary, &instances, None);
    assert!(summary["stores"].as_array().unwrap().iter().all(|s| s["transfer_syntax"] == uids::JPEG_LOSSLESS_SV1));
}

#[tokio::test]
async fn pynetdicom_unlimited_max_pdu_gets_capped_pdus() {
    let saved = tempfile::tempdir().expect("temp dir");
    let scp = PyScp::start(&["--max-pdu", "0", "--save", &saved.path().display().to_string()]);
    let instances: Vec<Instance> = sample("").into_iter().take(3).collect();
    let results = scu::store_all(&scp.dest(), &fast(), instances.clone(), |_| {}).await.expect("store_all");
    assert_eq!(statuses(&results), vec![0; 3]);
    let summary = scp.summary(1);
    let largest = assert_pdus_fit(&summary, u64::from(scu::SEND_PDU_CAP));
    assert!(largest > 16384, "an unlimited peer gets large PDUs: {largest}");
    assert_datasets_complete(&summary, &instances, Some(saved.path()));
}

#[tokio::test]
async fn warnings_count_as_success_and_failures_keep_their_status() {
    let codes = [0x0000u16, 0xB000, 0xB006, 0xB007, 0xA700, 0xA900, 0xC000];
    let list = codes.iter().map(|c| format!("{c:04X}")).collect::<Vec<_>>().join(",");
    let scp = PyScp::start(&["--statuses", &list]);
    let instances: Vec<Instance> = sample("-jpegls").into_iter().take(codes.len()).collect();
    let mut seen = Vec::new();
    let results = scu::store_all(&scp.dest(), &fast(), instances, |r| seen.push(r.status)).await.expect("store_all");
    assert_eq!(statuses(&results), codes.to_vec());
    assert_eq!(seen, codes.to_vec(), "progress reports every instance in order");
    for r in &results[..4] {
        assert!(r.is_success_or_warning(), "{:04X} is success", r.status);
    }
    for r in &results[4..] {
        assert!(!r.is_success_or_warning(), "{:04X} is a failure", r.status);
        assert_eq!(r.comment.as_deref(), Some(format!("test status {:04X}", r.status).as_str()));
    }
    assert_eq!(scp.summary(1)["released"], 1, "failures do not end the association");
}

#[tokio::test]
async fn peer_without_storage_contexts_fails_fast_naming_the_sop_class() {
    let scp = PyScp::start(&["--contexts", "verification"]);
    let started = Instant::now();
    let err = scu::store_all(&scp.dest(), &fast(), sample("-jpegll"), |_| {}).await.expect_err("no context");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let text = err.to_string();
    assert!(matches!(err, ScuError::NoAcceptedContext { .. }), "{text}");
    assert!(text.contains("CT Image Storage") && text.contains("JPEG Lossless"), "{text}");
    let summary = scp.summary(1);
    assert!(summary["stores"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn instances_without_an_accepted_context_fail_alone() {
    let saved = tempfile::tempdir().expect("temp dir");
    let scp = PyScp::start(&["--contexts", "uncompressed", "--save", &saved.path().display().to_string()]);
    let explicit: Vec<Instance> = sample("").into_iter().take(2).collect();
    let jpeg: Vec<Instance> = sample("-jpegll").into_iter().skip(2).take(2).collect();
    let instances: Vec<Instance> = vec![jpeg[0].clone(), explicit[0].clone(), jpeg[1].clone(), explicit[1].clone()];
    let results = scu::store_all(&scp.dest(), &fast(), instances, |_| {}).await.expect("store_all");
    assert!(results[1].sent && results[3].sent);
    assert_eq!((results[1].status, results[3].status), (0, 0));
    for r in [&results[0], &results[2]] {
        assert!(!r.sent && !r.is_success_or_warning());
        let comment = r.comment.as_deref().unwrap_or("");
        assert!(
            comment.contains("no accepted presentation context for CT Image Storage in JPEG Lossless"),
            "{comment}"
        );
    }
    let summary = scp.summary(1);
    assert_datasets_complete(&summary, &explicit, Some(saved.path()));
}

#[tokio::test]
async fn wrong_called_ae_title_is_rejected_with_result_source_reason() {
    let scp = PyScp::start(&["--require-called-ae"]);
    let dest = Destination { ae_title: "WRONG".into(), ..scp.dest() };
    let err = scu::store_all(&dest, &fast(), sample("").into_iter().take(1), |_| {}).await.expect_err("rejected");
    match &err {
        ScuError::Rejected { result, rj_source, reason, .. } => assert_eq!((*result, *rj_source, *reason), (1, 1, 7)),
        other => panic!("expected A-ASSOCIATE-RJ, got {other}"),
    }
    assert!(err.to_string().contains("called AE title not recognized"), "{err}");
}

#[tokio::test]
async fn nothing_listening_is_a_connection_error() {
    let port = free_port();
    let dest = Destination { ae_title: "NOBODY".into(), host: "127.0.0.1".into(), port, tls: None };
    let started = Instant::now();
    let err = scu::store_all(&dest, &fast(), sample("").into_iter().take(1), |_| {}).await.expect_err("no peer");
    assert!(matches!(err, ScuError::Connect { .. }), "{err}");
    assert!(started.elapsed() < fast().connect_timeout);
    assert!(err.to_string().contains(&format!("NOBODY@127.0.0.1:{port}")), "{err}");
}

#[tokio::test]
async fn silent_response_hits_the_dimse_timeout() {
    let scp = PyScp::start(&["--delay", "5"]);
    let config = ScuConfig { dimse_timeout: Duration::from_secs(1), ..fast() };
    let started = Instant::now();
    let err = scu::store_all(&scp.dest(), &config, sample("").into_iter().take(2), |_| {}).await.expect_err("timeout");
    assert!(matches!(err, ScuError::Timeout { what: "waiting for C-STORE-RSP", .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
}

#[test]
fn part10_reader_matches_the_test_harness() {
    for path in sample_series("-j2k").iter().take(3) {
        let ours = Instance::from_part10_file(path).expect("Part 10");
        let theirs = read_part10(path);
        assert_eq!(ours.sop_class_uid, theirs.sop_class_uid);
        assert_eq!(ours.sop_instance_uid, theirs.sop_instance_uid);
        assert_eq!(ours.transfer_syntax_uid, theirs.transfer_syntax_uid);
        assert_eq!(ours.dataset, theirs.dataset);
    }
    assert!(Instance::from_part10_file(Path::new(&repo_root()).join("data/ct/README.md")).is_err());
}
