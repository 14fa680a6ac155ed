//! Building DICOM JSON (PS3.18 F.2) for QIDO-RS answers and STOW-RS responses, and turning the
//! relative `BulkDataURI`s kept in the index into absolute ones for the root a client reached.

use axum::http::{header, HeaderMap};
use firstread_store::metadata::BULK_DATA_URI_PREFIX;
use serde_json::{json, Map, Value};

use crate::DICOMWEB_ROOT;

/// A DICOM JSON data set under construction.
pub type Dataset = Map<String, Value>;

/// Sets attribute `tag` (`"GGGGEEEE"`) with value representation `vr` from its DICOM string
/// form (multiple values separated by `\`). Numbers (IS, DS, US, UL, SS, SL, FL, FD) become
/// JSON numbers, PN becomes `{"Alphabetic": ...}` (PS3.18 F.2.2, F.2.3); an absent or empty
/// value gives an attribute without `Value` (F.2.5); a value that does not parse as the number
/// its VR promises is sent as an empty attribute rather than as a wrong type.
pub fn put(ds: &mut Dataset, tag: &str, vr: &str, value: Option<&str>) {
    let values: Vec<Value> = value
        .map(|v| v.trim_matches(|c: char| c == '\0' || c.is_whitespace()))
        .filter(|v| !v.is_empty())
        .map(|v| v.split('\\').filter_map(|one| typed(vr, one.trim())).collect())
        .unwrap_or_default();
    let mut attribute = Map::new();
    attribute.insert("vr".into(), Value::from(vr));
    if !values.is_empty() {
        attribute.insert("Value".into(), Value::Array(values));
    }
    ds.insert(tag.into(), Value::Object(attribute));
}

fn typed(vr: &str, v: &str) -> Option<Value> {
    match vr {
        "PN" => Some(firstread_store::metadata::person_name(v)),
        "IS" | "SS" | "SL" | "US" | "UL" => v.parse::<i64>().ok().map(Value::from),
        "DS" | "FL" | "FD" => v.parse::<f64>().ok().filter(|f| f.is_finite()).map(Value::from),
        _ => Some(Value::from(v)),
    }
}

/// Sets a sequence attribute (VR SQ) with `items`.
pub fn put_sequence(ds: &mut Dataset, tag: &str, items: Vec<Dataset>) {
    let items: Vec<Value> = items.into_iter().map(Value::Object).collect();
    ds.insert(tag.into(), json!({ "vr": "SQ", "Value": items }));
}

/// The absolute DICOMweb root the client reached, e.g. `http://host:8080/dicom-web`, from
/// `X-Forwarded-Proto`/`X-Forwarded-Host` (a reverse proxy) or `Host`, with the listener's own
/// scheme (`https`) otherwise. A `Host` without a port (some clients, e.g. Python
/// dicomweb-client, send only the host name) gets `listen_port`, the port the client connected
/// to, unless that is the scheme's default.
pub fn root_url(headers: &HeaderMap, listen_port: u16, https: bool) -> String {
    let value =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.split(',').next().unwrap_or(v).trim());
    let own = if https { "https" } else { "http" };
    let proto = value("x-forwarded-proto").filter(|p| *p == "http" || *p == "https").unwrap_or(own);
    let valid = |h: &&str| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    if let Some(forwarded) = value("x-forwarded-host").filter(valid) {
        return format!("{proto}://{forwarded}{DICOMWEB_ROOT}");
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).filter(valid).unwrap_or("localhost");
    let has_port = host.rsplit_once(':').is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()));
    if has_port || listen_port == if https { 443 } else { 80 } {
        format!("{proto}://{host}{DICOMWEB_ROOT}")
    } else {
        format!("{proto}://{host}:{listen_port}{DICOMWEB_ROOT}")
    }
}

/// Makes the relative `BulkDataURI`s of stored metadata (see [`firstread_store::metadata`])
/// absolute under `root` (`root` without a trailing slash).
pub fn absolute_bulk_data_uris(metadata: &str, root: &str) -> String {
    metadata.replace(BULK_DATA_URI_PREFIX, &format!("{BULK_DATA_URI_PREFIX}{root}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_their_json_types_and_bad_numbers_are_not_sent() {
        let mut ds = Dataset::new();
        put(&mut ds, "00100010", "PN", Some("Doe^Jane "));
        put(&mut ds, "00201208", "IS", Some("30"));
        put(&mut ds, "00280030", "DS", Some("0.7\\0.8"));
        put(&mut ds, "00080061", "CS", Some("CT\\SR"));
        put(&mut ds, "00200013", "IS", Some("x1"));
        put(&mut ds, "00080050", "SH", None);
        let v = Value::Object(ds);
        assert_eq!(v["00100010"]["Value"][0]["Alphabetic"], "Doe^Jane");
        // the three component groups of a Japanese name, each in its own member
        let mut names = Dataset::new();
        put(&mut names, "00100010", "PN", Some("Yamada^Tarou=山田^太郎=やまだ^たろう"));
        put(&mut names, "00080090", "PN", Some("=山田^太郎"));
        let names = Value::Object(names);
        assert_eq!(
            names["00100010"]["Value"][0],
            json!({ "Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう" })
        );
        assert_eq!(names["00080090"]["Value"][0], json!({ "Ideographic": "山田^太郎" }));
        assert_eq!(v["00201208"]["Value"][0], 30);
        assert_eq!(v["00280030"]["Value"], json!([0.7, 0.8]));
        assert_eq!(v["00080061"]["Value"], json!(["CT", "SR"]));
        assert_eq!(v["00200013"], json!({"vr": "IS"}));
        assert_eq!(v["00080050"], json!({"vr": "SH"}));
    }

    #[test]
    fn root_url_follows_the_proxy_and_refuses_odd_hosts() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(root_url(&h, 9000, false), "http://127.0.0.1:8080/dicom-web");
        h.insert(header::HOST, "127.0.0.1".parse().unwrap());
        assert_eq!(root_url(&h, 9000, false), "http://127.0.0.1:9000/dicom-web");
        assert_eq!(root_url(&h, 80, false), "http://127.0.0.1/dicom-web");
        assert_eq!(root_url(&h, 9443, true), "https://127.0.0.1:9443/dicom-web");
        assert_eq!(root_url(&h, 443, true), "https://127.0.0.1/dicom-web");
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "pacs.example.org".parse().unwrap());
        assert_eq!(root_url(&h, 9000, false), "https://pacs.example.org/dicom-web");
        h.insert("x-forwarded-host", "evil\"host".parse().unwrap());
        h.insert(header::HOST, "[::1]:8080".parse().unwrap());
        assert_eq!(root_url(&h, 9000, false), "https://[::1]:8080/dicom-web");
    }

    #[test]
    fn bulk_data_uris_become_absolute() {
        let stored = r#"{"7FE00010":{"vr":"OW","BulkDataURI":"studies/1/series/2/instances/3/bulk/7FE00010"}}"#;
        let out = absolute_bulk_data_uris(stored, "http://h/dicom-web");
        assert!(out.contains(r#""BulkDataURI":"http://h/dicom-web/studies/1/series/2/instances/3/bulk/7FE00010""#));
    }
}
