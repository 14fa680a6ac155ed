//! Store SCP against real peers (dcmtk, pynetdicom) and crafted traffic (dicom-ul client), with
//! the real PostgreSQL index and real files.

use std::time::Duration;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::open_file;
use firstread_dimse::AllowedPeer;
use firstread_e2e::*;

const CT: &str = uids::CT_IMAGE_STORAGE;

/// Sends the sample series in one encoding with dcmtk storescu and checks the stored copies.
async fn store_sample(variant: &str, storescu_flag: &str, expected_ts: &str) {
    let node = TestNode::start(|_| {}).await;
    let files = sample_series(variant);
    assert_eq!(files.len(), 30);
    let mut cmd = dcmtk("storescu");
    cmd.args([storescu_flag, "-aec", "FIRSTREAD", "-aet", "MODALITY", "127.0.0.1", &node.port().to_string()]);
    cmd.args(&files);
    let out = run(cmd);
    assert!(out.status.success(), "storescu failed: {}", String::from_utf8_lossy(&out.stderr));

    assert_eq!(node.count("SELECT count(*) FROM instances").await, 30);
    let per_series =
        node.count("SELECT max(n) FROM (SELECT count(*) AS n FROM instances GROUP BY series_instance_uid) s").await;
    assert_eq!(per_series, 30, "30 instances in the series");
    assert_eq!(node.count("SELECT count(*) FROM studies WHERE calling_ae_title = 'MODALITY' AND called_ae_title = 'FIRSTREAD' AND peer_address LIKE '127.0.0.1:%'").await, 1);
    assert!(node.incoming_files().is_empty());

    for original_path in &files {
        let original = open_file(original_path).expect("original");
        let sop = original.meta().media_storage_sop_instance_uid().trim_end_matches('\0').to_owned();
        let path: String = sqlx::query_scalar("SELECT path FROM instances WHERE sop_instance_uid = $1")
            .bind(&sop)
            .fetch_one(&node.pool)
            .await
            .expect("indexed");
        let stored = open_file(node.dir.path().join(&path)).expect("stored file re-reads");
        assert_eq!(stored.meta().transfer_syntax().trim_end_matches('\0'), expected_ts);
        assert_eq!(
            stored.element(tags::PIXEL_DATA).expect("pixel data").value(),
            original.element(tags::PIXEL_DATA).expect("pixel data").value(),
            "pixel data of {sop} differs"
        );
        let ts_row: String =
            sqlx::query_scalar("SELECT transfer_syntax_uid FROM instances WHERE sop_instance_uid = $1")
                .bind(&sop)
                .fetch_one(&node.pool)
                .await
                .expect("row");
        assert_eq!(ts_row, expected_ts);
    }
    node.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_and_explicit_vr_little_endian() {
    {
        let node = TestNode::start(|_| {}).await;
        let mut echo = dcmtk("echoscu");
        echo.args(["-aec", "FIRSTREAD", "127.0.0.1", &node.port().to_string()]);
        assert!(run(echo).status.success(), "C-ECHO succeeds");
    }
    store_sample("", "-xe", uids::EXPLICIT_VR_LITTLE_ENDIAN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jpeg_lossless_sv1_stored_as_received() {
    store_sample("-jpegll", "-xs", uids::JPEG_LOSSLESS_SV1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jpeg_ls_stored_as_received() {
    store_sample("-jpegls", "-xt", uids::JPEGLS_LOSSLESS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jpeg_2000_stored_as_received() {
    store_sample("-j2k", "-xv", uids::JPEG2000_LOSSLESS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn called_ae_title_must_be_ours() {
    let node = TestNode::start(|_| {}).await;
    let port = node.port().to_string();
    for called in ["WRONG", "firstread"] {
        let r = peer(&["associate", "127.0.0.1", &port, "--called", called]);
        assert_eq!(r["established"], false, "{called}: {r}");
        assert_eq!((r["result"].as_i64(), r["source"].as_i64(), r["reason"].as_i64()), (Some(1), Some(1), Some(7)));
    }
    // Trailing spaces are not significant (PS3.5 6.2 AE).
    let r = peer(&["associate", "127.0.0.1", &port, "--called", "FIRSTREAD   "]);
    assert_eq!(r["established"], true, "{r}");
    assert_eq!(r["echo_status"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_rejects_unknown_calling_ae_and_wrong_host() {
    let node = TestNode::start(|c| {
        c.dimse.allowed_peers = Some(vec![
            AllowedPeer { ae_title: "KNOWN".into(), host: Some("127.0.0.1".parse().unwrap()) },
            AllowedPeer { ae_title: "ELSEWHERE".into(), host: Some("10.9.9.9".parse().unwrap()) },
        ]);
    })
    .await;
    let port = node.port().to_string();
    let ok = peer(&["associate", "127.0.0.1", &port, "--calling", "KNOWN"]);
    assert_eq!(ok["established"], true, "{ok}");
    for calling in ["UNKNOWN", "ELSEWHERE"] {
        let r = peer(&["associate", "127.0.0.1", &port, "--calling", calling]);
        // pynetdicom sometimes classifies an RJ followed by our close as an abort; what matters
        // is the A-ASSOCIATE-RJ it received and that no association was established.
        assert_eq!(r["established"], false, "{calling}: {r}");
        assert_eq!((r["result"].as_i64(), r["source"].as_i64(), r["reason"].as_i64()), (Some(1), Some(1), Some(3)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn association_limit_rejects_transiently() {
    let node = TestNode::start(|c| c.dimse.max_associations = 1).await;
    let held = RawScu::connect(node.addr(), "FIRSTREAD", &[(uids::VERIFICATION, uids::IMPLICIT_VR_LITTLE_ENDIAN)])
        .await
        .expect("first association");
    let r = peer(&["associate", "127.0.0.1", &node.port().to_string()]);
    assert_eq!(r["established"], false, "{r}");
    assert_eq!((r["result"].as_i64(), r["source"].as_i64(), r["reason"].as_i64()), (Some(2), Some(3), Some(2)));
    held.release().await;
    let mut ok = false;
    for _ in 0..20 {
        if peer(&["associate", "127.0.0.1", &node.port().to_string()])["established"] == true {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a slot frees up after release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_one_of_128_presentation_contexts_is_answered() {
    let node = TestNode::start(|_| {}).await;
    let r = peer(&["contexts", "127.0.0.1", &node.port().to_string(), "--n", "128"]);
    assert_eq!(r["established"], true, "{r}");
    let contexts = r["contexts"].as_array().expect("contexts");
    assert_eq!(r["proposed"], 128);
    assert_eq!(contexts.len(), 128, "every proposed context answered");
    let result_of = |id: i64| {
        contexts
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| (c["abstract_syntax"].as_str().unwrap_or(""), c["result"].as_i64().unwrap_or(-1)))
    };
    // peer.py proposes Q/R FIND (id 1), MWL FIND (3), CT in JPEG 12-bit only (5), then storage classes.
    // PS3.8 Table 9-18: 3 abstract syntax not supported, 4 transfer syntaxes not supported.
    assert_eq!(result_of(1), Some((uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND, 3)));
    assert_eq!(result_of(3), Some((uids::MODALITY_WORKLIST_INFORMATION_MODEL_FIND, 3)));
    assert_eq!(result_of(5), Some((CT, 4)));
    let ids: std::collections::BTreeSet<i64> = contexts.iter().filter_map(|c| c["id"].as_i64()).collect();
    assert_eq!(ids, (0..128).map(|i| 2 * i + 1).collect(), "IDs 1, 3, ..., 255 each answered once");
    let accepted = contexts.iter().filter(|c| c["result"] == 0).count();
    assert!(accepted >= 120, "storage contexts accepted: {accepted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_maximum_pdu_of_zero_and_4096() {
    let node = TestNode::start(|_| {}).await;
    let files: Vec<String> = sample_series("").iter().take(6).map(|p| p.display().to_string()).collect();
    let port = node.port().to_string();
    for max_pdu in ["0", "4096"] {
        let mut args = vec!["store", "127.0.0.1", &port, "--max-pdu", max_pdu, "--files"];
        args.extend(files.iter().map(String::as_str));
        let r = peer(&args);
        assert_eq!(r["established"], true, "{r}");
        assert_eq!(r["statuses"], serde_json::json!([0, 0, 0, 0, 0, 0]), "max PDU {max_pdu}: {r}");
    }
    assert_eq!(node.count("SELECT count(*) FROM instances").await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_instances_twice_and_in_parallel_are_stored_once() {
    let node = TestNode::start(|_| {}).await;
    let files = sample_series("");
    let port = node.port().to_string();
    // The same files twice in one association.
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "FIRSTREAD", "127.0.0.1", &port]).args(&files).args(&files);
    assert!(run(cmd).status.success());
    // Two parallel associations with the same files.
    let spawn = || {
        let mut c = dcmtk("storescu");
        c.args(["-aec", "FIRSTREAD", "127.0.0.1", &port]).args(&files);
        c.spawn().expect("storescu")
    };
    let (a, b) = (spawn(), spawn());
    assert!(a.wait_with_output().expect("a").status.success());
    assert!(b.wait_with_output().expect("b").status.success());
    assert_eq!(node.count("SELECT count(*) FROM instances").await, 30);
    assert_eq!(node.stored_files().len(), 30, "one copy of each instance");
    assert!(node.incoming_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_or_reset_mid_instance_leaves_no_file_and_no_row() {
    let node = TestNode::start(|_| {}).await;
    let sample = read_part10(&sample_series("")[0]);
    for reset in [false, true] {
        let mut scu = RawScu::connect(node.addr(), "FIRSTREAD", &[(CT, uids::EXPLICIT_VR_LITTLE_ENDIAN)])
            .await
            .expect("associate");
        let pc = scu.context_id(CT);
        scu.send_command(pc, 1, CT, &sample.sop_instance_uid).await;
        scu.send_data(pc, &sample.dataset[..sample.dataset.len() / 2], 16 * 1024, false).await;
        assert!(
            eventually(Duration::from_secs(5), || !node.incoming_files().is_empty()).await,
            "the partial instance is being received"
        );
        if reset {
            scu.drop_connection();
        } else {
            scu.abort().await;
        }
        assert!(
            eventually(Duration::from_secs(5), || node.incoming_files().is_empty()).await,
            "partial file removed (reset: {reset})"
        );
        assert!(node.stored_files().is_empty());
        assert_eq!(node.count("SELECT count(*) FROM instances").await, 0);
        assert_eq!(node.count("SELECT count(*) FROM studies").await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_answer_the_right_status() {
    let node = TestNode::start(|_| {}).await;
    let sample = read_part10(&sample_series("")[0]);
    let mut scu =
        RawScu::connect(node.addr(), "FIRSTREAD", &[(CT, uids::EXPLICIT_VR_LITTLE_ENDIAN)]).await.expect("associate");
    // Affected SOP Instance UID differs from the data set's: A900.
    let (status, comment) = scu.store(1, CT, "1.2.3.4.5.6.7", &sample.dataset).await;
    assert_eq!(status, 0xA900, "{comment:?}");
    assert!(comment.is_some_and(|c| c.len() <= 64 && c.contains("SOP Instance UID")));
    // Not a data set: C000.
    let (status, _) = scu.store(2, CT, "1.2.3.4.5.6.8", &[0xFF; 300]).await;
    assert_eq!(status, 0xC000);
    // A data set without Study Instance UID: C000 naming it.
    let mut obj = dicom_object::InMemDicomObject::new_empty();
    obj.put(DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(CT)));
    obj.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.9")));
    let mut bytes = Vec::new();
    obj.write_dataset_with_ts(&mut bytes, &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .expect("encode");
    let (status, comment) = scu.store(3, CT, "1.2.3.9", &bytes).await;
    assert_eq!((status, comment.as_deref()), (0xC000, Some("missing Study Instance UID")));
    assert_eq!(node.count("SELECT count(*) FROM instances").await, 0);
    assert!(node.stored_files().is_empty() && node.incoming_files().is_empty());
    // The association survives failures: a good instance is still stored.
    let (status, _) = scu.store(4, CT, &sample.sop_instance_uid, &sample.dataset).await;
    assert_eq!(status, 0x0000);
    // A NUL inside the Patient's Name (invalid, and PostgreSQL text cannot hold it): stored, the
    // index keeps the name without it; not a transient A700 that a sender would retry for ever.
    let mut obj = dicom_object::open_file(&sample_series("")[2]).expect("sample").into_inner();
    obj.put(DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Doe\0^Jane")));
    obj.put(DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.826.0.1.3680043.8.498.99")));
    let sop: String =
        obj.element(tags::SOP_INSTANCE_UID).expect("sop").to_str().expect("sop").trim_end_matches('\0').to_owned();
    let mut nul = Vec::new();
    obj.write_dataset_with_ts(&mut nul, &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .expect("encode");
    let (status, comment) = scu.store(6, CT, &sop, &nul).await;
    assert_eq!(status, 0x0000, "{comment:?}");
    let name: Option<String> = sqlx::query_scalar(
        "SELECT patient_name FROM studies WHERE study_instance_uid = '1.2.826.0.1.3680043.8.498.99'",
    )
    .fetch_one(&node.pool)
    .await
    .expect("study");
    assert_eq!(name.as_deref(), Some("Doe^Jane"));
    // Storage failing (incoming/ replaced by a file): A700, and nothing indexed.
    let incoming = node.dir.path().join("incoming");
    std::fs::remove_dir_all(&incoming).expect("rm incoming");
    std::fs::write(&incoming, b"not a directory").expect("block incoming");
    let second = read_part10(&sample_series("")[1]);
    let (status, comment) = scu.store(5, CT, &second.sop_instance_uid, &second.dataset).await;
    assert_eq!((status, comment.as_deref()), (0xA700, Some("storage unavailable")));
    assert_eq!(node.count("SELECT count(*) FROM instances").await, 2);
    scu.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_sop_instance_in_another_series_keeps_the_first_with_a_warning() {
    let node = TestNode::start(|_| {}).await;
    let path = &sample_series("")[0];
    let sample = read_part10(path);
    let mut moved = open_file(path).expect("sample").into_inner();
    moved.put(DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.826.0.1.3680043.10.1.77")));
    let mut moved_bytes = Vec::new();
    moved
        .write_dataset_with_ts(
            &mut moved_bytes,
            &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .expect("encode");
    let mut scu =
        RawScu::connect(node.addr(), "FIRSTREAD", &[(CT, uids::EXPLICIT_VR_LITTLE_ENDIAN)]).await.expect("associate");
    assert_eq!(scu.store(1, CT, &sample.sop_instance_uid, &sample.dataset).await.0, 0x0000);
    let (status, comment) = scu.store(2, CT, &sample.sop_instance_uid, &moved_bytes).await;
    assert_eq!(status, 0xB000, "{comment:?}");
    scu.release().await;
    assert_eq!(node.count("SELECT count(*) FROM instances").await, 1);
    assert_eq!(
        node.count("SELECT count(*) FROM instances WHERE series_instance_uid = '1.2.826.0.1.3680043.10.1.77'").await,
        0
    );
    assert_eq!(node.stored_files().len(), 1, "the conflicting copy is not kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_encodings_are_stored_and_indexed() {
    let node = TestNode::start(|_| {}).await;
    let r = peer(&["odd", "127.0.0.1", &node.port().to_string()]);
    assert_eq!(r["status"], 0, "{r}");
    let sop = r["sop_instance_uid"].as_str().expect("uid").to_owned();
    type IndexedRow = (Option<f64>, Option<i32>, Option<i32>, Option<Vec<f64>>, Option<String>);
    let row: IndexedRow = sqlx::query_as(
        "SELECT slice_thickness, instance_number, (SELECT series_number FROM series s WHERE s.series_instance_uid = i.series_instance_uid), \
         image_position_patient, image_type FROM instances i WHERE sop_instance_uid = $1",
    )
    .bind(&sop)
    .fetch_one(&node.pool)
    .await
    .expect("indexed");
    assert_eq!(row.0, Some(2.5));
    assert_eq!(row.1, Some(7));
    assert_eq!(row.2, None, "empty IS is absent");
    assert_eq!(row.3, Some(vec![-250.0, -250.0, 80.5]));
    assert_eq!(row.4.as_deref(), Some("ORIGINAL\\PRIMARY\\AXIAL"));
    // Implicit VR LE as received, private undefined-length sequence kept.
    let path: String = sqlx::query_scalar("SELECT path FROM instances WHERE sop_instance_uid = $1")
        .bind(&sop)
        .fetch_one(&node.pool)
        .await
        .expect("path");
    let stored = open_file(node.dir.path().join(path)).expect("re-reads");
    assert_eq!(stored.meta().transfer_syntax().trim_end_matches('\0'), uids::IMPLICIT_VR_LITTLE_ENDIAN);
    assert!(stored.element(dicom_core::Tag(0x0009, 0x1001)).is_ok());
}
