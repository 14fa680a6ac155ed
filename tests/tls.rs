//! DICOM TLS (PS3.15 B.9, BCP 195) against dcmtk built with OpenSSL: the sample in with
//! `storescu +tls`, the results out to `storescp +tls` (each side verifying the other's
//! certificate), and the refusals: a certificate another CA issued, no certificate, plain TCP.

use std::process::{Command, Stdio};
use std::time::Duration;

use firstread::config::DimseTlsConfig;
use firstread_dimse::{ClientTlsFiles, Destination};
use firstread_e2e::pki::Ca;
use firstread_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_goes_both_ways_over_dicom_tls_and_peers_without_a_trusted_certificate_are_refused() {
    let pki = tempfile::tempdir().expect("dir");
    let ca = Ca::new(pki.path(), "hospital-ca");
    let ours = ca.issue("firstread");
    let modality = ca.issue("modality");
    let rogue = Ca::new(pki.path(), "rogue-ca").issue("intruder");

    // the modality: dcmtk storescp over TLS, verifying our certificate (dcmtk's default)
    let scp_port = free_port();
    let received = tempfile::tempdir().expect("dir");
    let mut cmd = dcmtk("storescp");
    cmd.args(["-aet", "MODALITY", "-uf", "-od"])
        .arg(received.path())
        .arg("+tls")
        .args([&modality.private_key, &modality.certificate])
        .arg("+cf")
        .arg(&ca.certificate)
        .arg(scp_port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _scp = Peer(cmd.spawn().expect("storescp +tls"));
    wait_listening(scp_port, "storescp +tls");

    let node = TestNode::start(|c| {
        c.assembly.stable_after = Duration::from_millis(500);
        c.dimse.plain = false;
        c.dimse.tls = Some(DimseTlsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            certificate: ours.certificate.clone(),
            private_key: ours.private_key.clone(),
            client_ca: Some(ca.certificate.clone()),
        });
        c.export.destinations = vec![Destination {
            ae_title: "MODALITY".into(),
            host: "127.0.0.1".into(),
            port: scp_port,
            tls: Some(ClientTlsFiles {
                ca: ca.certificate.clone(),
                certificate: Some(ours.certificate.clone()),
                private_key: Some(ours.private_key.clone()),
                server_name: None,
            }),
        }];
        c.export.backoff_base = Duration::from_millis(500);
    })
    .await;
    assert!(node.node.dimse_addr.is_none(), "only DICOM TLS is configured: no plain TCP listener");
    let tls_port = node.node.dimse_tls_addr.expect("TLS listener").port().to_string();

    // in: storescu +tls with the modality's certificate
    let mut cmd = dcmtk("storescu");
    cmd.arg("+tls")
        .args([&modality.private_key, &modality.certificate])
        .arg("+cf")
        .arg(&ca.certificate)
        .args(["-aet", "MODALITY", "-aec", "FIRSTREAD", "127.0.0.1", &tls_port])
        .args(sample_series(""));
    let out = run(cmd);
    assert!(out.status.success(), "storescu +tls: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        node.count("SELECT count(*) FROM instances WHERE sop_class_uid = '1.2.840.10008.5.1.4.1.1.2'").await,
        30
    );

    // out: the results to storescp +tls
    let done = eventually_async(Duration::from_secs(120), || node.exports_are("done")).await;
    assert!(done, "export over TLS: {:?}", node.export_jobs().await);
    let got = files_under(received.path());
    assert!(got.len() >= 4, "SR, volumetric SR, SEG and key images received over TLS: {got:?}");

    // refused: none of these reaches an association
    let associations = node.count("SELECT count(*) FROM associations").await;
    let one = sample_series("").into_iter().next().expect("a file");
    let refusals: [(&str, Vec<std::ffi::OsString>); 3] = [
        (
            "a certificate another CA issued",
            vec![
                "+tls".into(),
                rogue.private_key.clone().into(),
                rogue.certificate.clone().into(),
                "+cf".into(),
                ca.certificate.clone().into(),
            ],
        ),
        ("no client certificate (anonymous TLS)", vec!["+tla".into(), "+cf".into(), ca.certificate.clone().into()]),
        ("plain TCP", Vec::new()),
    ];
    for (what, tls_args) in refusals {
        let mut cmd = dcmtk("storescu");
        cmd.args(&tls_args)
            .args(["-ta", "10", "-aet", "MODALITY", "-aec", "FIRSTREAD", "127.0.0.1", &tls_port])
            .arg(&one);
        let out = run(cmd);
        assert!(!out.status.success(), "{what}: storescu succeeded");
    }
    assert_eq!(
        node.count("SELECT count(*) FROM associations").await,
        associations,
        "a refused peer never gets an association"
    );
}

/// Without `client_ca` any TLS peer may connect (the AE-title policy alone decides), and the plain
/// TCP listener runs beside the TLS one unless `plain = false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_ca_anonymous_tls_is_accepted_beside_plain_tcp() {
    let pki = tempfile::tempdir().expect("dir");
    let ca = Ca::new(pki.path(), "hospital-ca");
    let ours = ca.issue("firstread");
    let node = TestNode::start(|c| {
        c.dimse.tls = Some(DimseTlsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            certificate: ours.certificate.clone(),
            private_key: ours.private_key.clone(),
            client_ca: None,
        });
    })
    .await;
    let files = sample_series("");
    let tls_port = node.node.dimse_tls_addr.expect("TLS listener").port().to_string();
    let mut cmd = dcmtk("storescu");
    cmd.args(["+tla", "+cf"])
        .arg(&ca.certificate)
        .args(["-aec", "FIRSTREAD", "127.0.0.1", &tls_port])
        .args(&files[..10]);
    let out = run(cmd);
    assert!(out.status.success(), "anonymous TLS: {}", String::from_utf8_lossy(&out.stderr));
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "FIRSTREAD", "127.0.0.1", &node.port().to_string()]).args(&files[10..]);
    let out = run(cmd);
    assert!(out.status.success(), "plain TCP: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        node.count("SELECT count(*) FROM instances WHERE sop_class_uid = '1.2.840.10008.5.1.4.1.1.2'").await,
        30
    );
    // the peer does not trust a certificate its CA list does not hold: dcmtk refuses ours
    let other = Ca::new(pki.path(), "other-ca");
    let mut cmd = dcmtk("storescu");
    cmd.args(["+tla", "+cf"])
        .arg(&other.certificate)
        .args(["-ta", "10", "-aec", "FIRSTREAD", "127.0.0.1", &tls_port])
        .arg(&files[0]);
    assert!(!run(cmd).status.success(), "a peer that does not trust our CA gives up");
}

/// `firstread listen` reads its certificate again on SIGHUP: after the files are replaced, peers
/// that trust only the new CA connect, and those that trust only the old one no longer do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_reloaded_on_sighup() {
    let pki = tempfile::tempdir().expect("dir");
    let (old_ca, new_ca) = (Ca::new(pki.path(), "old-ca"), Ca::new(pki.path(), "new-ca"));
    let (old, new) = (old_ca.issue("firstread"), new_ca.issue("firstread"));
    let (certificate, private_key) = (pki.path().join("node.crt"), pki.path().join("node.key"));
    let install = |issued: &firstread_e2e::pki::Issued| {
        std::fs::copy(&issued.certificate, &certificate).expect("certificate");
        std::fs::copy(&issued.private_key, &private_key).expect("key");
    };
    install(&old);
    let db = TestDb::create().await;
    let root = tempfile::tempdir().expect("dir");
    let tls_port = free_port();
    let mut env = node_env(&db, root.path(), free_port());
    env.push(("FIRSTREAD_DIMSE__TLS__LISTEN", format!("127.0.0.1:{tls_port}")));
    env.push(("FIRSTREAD_DIMSE__TLS__CERTIFICATE", certificate.display().to_string()));
    env.push(("FIRSTREAD_DIMSE__TLS__PRIVATE_KEY", private_key.display().to_string()));
    let node = Process::start(&["listen"], &env);
    wait_listening(tls_port, "firstread listen (DICOM TLS)");
    let one = sample_series("").into_iter().next().expect("a file");
    let echo = |ca: &std::path::Path| {
        let mut cmd = dcmtk("storescu");
        cmd.args(["+tla", "+cf"]).arg(ca).args(["-ta", "10", "-aec", "FIRSTREAD", "127.0.0.1", &tls_port.to_string()]);
        cmd.arg(&one);
        run(cmd).status.success()
    };
    assert!(echo(&old_ca.certificate), "the old certificate is served");
    assert!(!echo(&new_ca.certificate));

    install(&new);
    let hup = Command::new("kill").args(["-HUP", &node.child.id().to_string()]).status().expect("kill -HUP");
    assert!(hup.success());
    let reloaded = eventually_async(Duration::from_secs(10), || async { echo(&new_ca.certificate) }).await;
    assert!(reloaded, "the new certificate is served after SIGHUP");
    assert!(!echo(&old_ca.certificate), "the old one no longer");
}

/// HTTPS: the DICOMweb conformance client (dicomweb-client over requests) against the node with a
/// test CA; a client that does not trust the CA, and plain HTTP, get no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicomweb_client_stores_searches_and_retrieves_over_https() {
    let pki = tempfile::tempdir().expect("dir");
    let ca = Ca::new(pki.path(), "hospital-ca");
    let ours = ca.issue("firstread");
    let node = TestNode::start_roles(firstread::Roles { listen: true, work: false }, |c| {
        c.http.tls = Some(firstread_dimse::ServerTlsFiles {
            certificate: ours.certificate.clone(),
            private_key: ours.private_key.clone(),
            client_ca: None,
        });
    })
    .await;
    let addr = node.node.http_addr.expect("HTTP");
    let url = format!("https://{addr}/dicom-web");
    let out = run({
        let mut c = Command::new("python3");
        c.arg(repo_root().join("tests/peers/dicomweb_conformance.py"))
            .args(["--url", &url, "--token", TEST_TOKEN])
            .arg("--data")
            .arg(repo_root().join("data/ct/lung-dx-a0002-b40f"))
            .arg("--storage")
            .arg(node.dir.path())
            .env("REQUESTS_CA_BUNDLE", &ca.certificate);
        c
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all DICOMweb checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // metadata points back over HTTPS; a client without the CA and plain HTTP get nothing
    let probe = "import sys, requests\n\
                 h = {'Authorization': 'Bearer ' + sys.argv[2]}\n\
                 r = requests.get(sys.argv[1] + '/studies?limit=1', headers=h, timeout=20, verify=sys.argv[3])\n\
                 print(r.status_code)\n\
                 study = r.json()[0]['0020000D']['Value'][0]\n\
                 m = requests.get(sys.argv[1] + '/studies/' + study + '/metadata', headers=h, timeout=60, verify=sys.argv[3]).json()\n\
                 uris = [v['BulkDataURI'] for ds in m for v in ds.values() if 'BulkDataURI' in v]\n\
                 print(len(uris) > 0 and all(u.startswith('https://') for u in uris))\n\
                 for url in (sys.argv[1] + '/studies', sys.argv[1].replace('https://', 'http://') + '/studies'):\n\
                 \x20   try:\n\
                 \x20       requests.get(url, timeout=20)\n\
                 \x20       print('answered')\n\
                 \x20   except (requests.exceptions.SSLError, requests.exceptions.ConnectionError) as e:\n\
                 \x20       print(type(e).__name__)";
    let out = run({
        let mut c = Command::new("python3");
        c.args(["-c", probe, &url, TEST_TOKEN]).arg(&ca.certificate).env_remove("REQUESTS_CA_BUNDLE");
        c
    });
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines, ["200", "True", "SSLError", "ConnectionError"], "{}", String::from_utf8_lossy(&out.stderr));
}
