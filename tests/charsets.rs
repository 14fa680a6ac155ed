//! Character sets: pydicom's character-set test files (Latin, Greek, Cyrillic, Arabic, Hebrew,
//! UTF-8, GB18030, and ISO 2022 with the JIS X 0208, JIS X 0201 and KS X 1001 extensions) stored
//! over DIMSE with dcmtk `storescu`; in WADO-RS metadata each Patient's Name equals pydicom's
//! decoded value, split into its Alphabetic, Ideographic and Phonetic groups (PS3.18 F.2.2), and
//! QIDO-RS answers the same for a Japanese study.

use std::process::Command;
use std::time::Duration;

use firstread_e2e::*;
use serde_json::Value;

const FILES: [&str; 13] = [
    "chrArab.dcm",
    "chrFren.dcm",
    "chrGerm.dcm",
    "chrGreek.dcm",
    "chrH31.dcm",
    "chrH32.dcm",
    "chrHbrw.dcm",
    "chrI2.dcm",
    "chrJapMulti.dcm",
    "chrKoreanMulti.dcm",
    "chrRuss.dcm",
    "chrX1.dcm",
    "chrX2.dcm",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pydicom_charset_files_come_out_as_pydicom_reads_them() {
    let node = TestNode::start_roles(firstread::Roles { listen: true, work: false }, |_| {}).await;
    // pydicom's files and its reading of them
    let out = run({
        let mut c = Command::new("python3");
        c.arg("-c")
            .arg(
                "import sys, json, pydicom, pydicom.data\n\
                 out = []\n\
                 for name in sys.argv[1:]:\n\
                 \x20   path = pydicom.data.get_charset_files(name)[0]\n\
                 \x20   ds = pydicom.dcmread(path)\n\
                 \x20   pn = ds.PatientName\n\
                 \x20   groups = {k: v for k, v in (('Alphabetic', pn.alphabetic), ('Ideographic', pn.ideographic),\n\
                 \x20       ('Phonetic', pn.phonetic)) if v}\n\
                 \x20   out.append({'file': name, 'path': path, 'study': ds.StudyInstanceUID, 'series': ds.SeriesInstanceUID,\n\
                 \x20       'sop': ds.SOPInstanceUID, 'name': groups})\n\
                 print(json.dumps(out, ensure_ascii=False))",
            )
            .args(FILES);
        c
    });
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    let paths: Vec<String> = expected.iter().map(|e| e["path"].as_str().unwrap_or("").to_owned()).collect();
    let sent = run({
        let mut c = dcmtk("storescu");
        c.args(["-aec", "FIRSTREAD", "-aet", "CHARSETS", "127.0.0.1", &node.port().to_string()]).args(&paths);
        c
    });
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    let stored = eventually_async(Duration::from_secs(30), || async {
        node.count("SELECT count(*) FROM instances").await == FILES.len() as i64
    })
    .await;
    assert!(stored, "every file stored");

    let http = reqwest::Client::new();
    let root = node.dicomweb();
    let dicom_json = |url: String| {
        let request = http.get(url).bearer_auth(TEST_TOKEN).header("accept", "application/dicom+json").send();
        async move { request.await.expect("DICOMweb").json::<Value>().await.expect("json") }
    };
    let mut wrong = Vec::new();
    for e in &expected {
        let url = format!(
            "{root}/studies/{}/series/{}/instances/{}/metadata",
            e["study"].as_str().unwrap_or(""),
            e["series"].as_str().unwrap_or(""),
            e["sop"].as_str().unwrap_or("")
        );
        let metadata = dicom_json(url).await;
        let name = &metadata[0]["00100010"]["Value"][0];
        if *name != e["name"] {
            wrong.push(format!("{}: {name} instead of {}", e["file"], e["name"]));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // QIDO-RS answers from the index: the same name for the Japanese study (chrH31)
    let h31 = expected.iter().find(|e| e["file"] == "chrH31.dcm").expect("chrH31");
    let study = h31["study"].as_str().unwrap_or("");
    let found = dicom_json(format!("{root}/studies?StudyInstanceUID={study}")).await;
    assert_eq!(found[0]["00100010"]["Value"][0], h31["name"], "{found}");
    assert_eq!(
        h31["name"],
        serde_json::json!({ "Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう" })
    );
}
