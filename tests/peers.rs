//! The peer registry: with the default policy only `[[peers]]` may send (others get A-ASSOCIATE-RJ
//! permanent, reason 3, recorded as a failed login in the audit trail), a peer with an IP address
//! must come from it, and a peer that takes results gets them back. Real peers: dcmtk storescu and
//! storescp.

use std::time::Duration;

use firstread::config::{PeerConfig, UnknownPeers};
use firstread_e2e::*;

fn storescu(aet: &str, port: u16, files: &[std::path::PathBuf]) -> std::process::Output {
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "FIRSTREAD", "-aet", aet, "127.0.0.1", &port.to_string()]).args(files);
    run(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_known_peers_may_send_and_results_go_back_to_them() {
    let scp_port = free_port();
    let received = tempfile::tempdir().expect("dir");
    let _scp = storescp(scp_port, received.path());
    let peer = |ae: &str, host: &str, port: Option<u16>| PeerConfig {
        ae_title: ae.into(),
        host: Some(host.into()),
        port,
        results: port.is_some(),
        always: false,
        tls: None,
        site: None,
    };
    let node = TestNode::start(|c| {
        c.assembly.stable_after = Duration::from_millis(500);
        c.dimse.unknown_peers = UnknownPeers::Refuse;
        c.peers = vec![peer("MODALITY", "127.0.0.1", Some(scp_port)), peer("ELSEWHERE", "10.9.9.9", None)];
    })
    .await;
    let files = sample_series("");
    for (aet, why) in [("STRANGER", "not a peer"), ("ELSEWHERE", "a peer, from another address")] {
        let out = storescu(aet, node.port(), &files[..1]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{aet} ({why}) was accepted");
        assert!(
            stderr.contains("Calling AE Title Not Recognized"),
            "{aet} ({why}): A-ASSOCIATE-RJ reason 3 expected:\n{stderr}"
        );
    }
    assert_eq!(node.count("SELECT count(*) FROM instances").await, 0);
    // each refusal is a failed login on the audit trail, with the AE title and the reason
    let refused: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT actor, actor_kind, detail->>'rejected' FROM audit_events \
         WHERE action = 'login' AND outcome = 'failure' ORDER BY id",
    )
    .fetch_all(&node.pool)
    .await
    .expect("audit");
    let expected = |ae: &str| (ae.to_owned(), "ae".to_owned(), "3: calling AE title not recognized".to_owned());
    assert_eq!(refused, [expected("STRANGER"), expected("ELSEWHERE")]);
    let out = storescu("MODALITY", node.port(), &files);
    assert!(out.status.success(), "the peer sends: {}", String::from_utf8_lossy(&out.stderr));
    let done = eventually_async(Duration::from_secs(120), || async {
        node.count("SELECT count(*) FROM jobs WHERE kind = 'export' AND state = 'done' AND destination = 'MODALITY'")
            .await
            == 2
    })
    .await;
    assert!(done, "the results go back to the peer");
    assert!(files_under(received.path()).len() >= 4, "SR, SEG and key images received");
}
