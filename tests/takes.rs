//! Which studies a model package takes, end to end: the chest models (covid19-lung-ct and
//! emphysema-ct, whose manifests' `[takes]` list the chest body parts) get a job for the sample
//! sent as it is (Body Part Examined CHEST) and none for the same images sent as a head CT; the
//! head CT is assembled all the same and shows as "not taken" on the triage worklist.
//!
//! The studies are made from the bundled sample CT (`data/ct/`: TCIA Lung-PET-CT-Dx, subject
//! Lung_Dx-A0002, doi:10.7937/TCIA.2020.NNC20461, CC BY 4.0; see `data/ct/README.md`).

use std::path::PathBuf;
use std::time::Duration;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use firstread::node::Roles;
use firstread_e2e::*;

const EMPHYSEMA: &str = "emphysema-ct";

/// The sample as a new study, Body Part Examined set to `body_part`.
fn study(out: &std::path::Path, body_part: &str) -> (String, Vec<PathBuf>) {
    let (study, series) = (uid(), uid());
    let files = sample_series("")
        .iter()
        .map(|src| {
            copy_as(src, out, &study, &series, |obj| {
                obj.put(DataElement::new(tags::BODY_PART_EXAMINED, VR::CS, PrimitiveValue::from(body_part)));
            })
        })
        .collect();
    (study, files)
}

// storescu blocks its thread: the node needs another
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_ct_is_not_taken_by_the_chest_models() {
    // listener and assembly only: the jobs are counted, not run
    let node = TestNode::start_roles(Roles { listen: true, work: false }, |c| {
        c.worker.models = Some(vec![COVID_MODEL.into(), EMPHYSEMA.into()]);
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (chest, chest_files) = study(&dir.path().join("chest"), "CHEST");
    let (head, head_files) = study(&dir.path().join("head"), "HEAD");
    for files in [&chest_files, &head_files] {
        let mut cmd = dcmtk("storescu");
        cmd.args(["-aec", "FIRSTREAD", "127.0.0.1", &node.port().to_string()]).args(files);
        let out = run(cmd);
        assert!(out.status.success(), "storescu: {}", String::from_utf8_lossy(&out.stderr));
    }
    let pool = node.pool.clone();
    let assembled = eventually_async(Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM studies WHERE queued_version >= 1")
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
            n == 2
        }
    })
    .await;
    assert!(assembled, "both studies assembled");
    let jobs: Vec<(String, String)> = sqlx::query_as(
        "SELECT study_instance_uid, model FROM jobs WHERE kind = 'analysis' ORDER BY study_instance_uid, model",
    )
    .fetch_all(&node.pool)
    .await
    .expect("jobs");
    assert_eq!(jobs, [(chest.clone(), COVID_MODEL.to_owned()), (chest.clone(), EMPHYSEMA.to_owned())]);

    let page = firstread_pages::worklist::page(&node.pool, &Default::default(), &firstread_sites::Scope::Every)
        .await
        .expect("worklist");
    let status = |study: &str| {
        page.rows.iter().find(|r| r.study_instance_uid == study).map(|r| r.status.clone()).expect("a row")
    };
    assert_eq!(status(&head), "not_taken");
    assert_eq!(status(&chest), "queued");
}
