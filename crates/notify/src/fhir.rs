//! FHIR R4: the result as a transaction Bundle POSTed to the server's base URL (FHIR R4 3.1.0.11
//! "transaction"), shaped after the HL7 "DICOM SR to FHIR Resource Mapping" IG:
//! - a `Device` for the model (name and version; conditional create on its identifier);
//! - the `Patient` (conditional create on the Patient ID, when there is one);
//! - one `Observation` per measurement: the SR's concept as `code`, UCUM `valueQuantity`,
//!   coded values as `valueCodeableConcept`, the lung (and side) as `bodySite`, interpretation
//!   `A` / `N` (v3-ObservationInterpretation), `device` the model;
//! - the `DiagnosticReport` (LOINC 24627-2 "CT Chest", category RAD) with the Observations as
//!   `result`, the study as `imagingStudy` (by its DICOM UID), the summary and the pre-read notice
//!   as `conclusion`, the extent class as `conclusionCode`.
//!
//! `status` is `final`, or `corrected` when the message replaces an earlier study version's.

use serde_json::{json, Value as Json};
use uuid::Uuid;

use crate::config::Channel;
use crate::event::{Coded, Event, ResultStatus, Value};
use crate::DeliveryError;

/// The coding system URI of a DICOM coding scheme designator.
pub fn system(scheme: &str) -> String {
    match scheme {
        "SCT" => "http://snomed.info/sct".into(),
        "DCM" => "http://dicom.nema.org/resources/ontology/DCM".into(),
        "LN" => "http://loinc.org".into(),
        "UCUM" => "http://unitsofmeasure.org".into(),
        other => format!("urn:firstread:codes:{}", other.to_ascii_lowercase()),
    }
}

fn codeable(c: &Coded, text: Option<&str>) -> Json {
    let mut v = json!({ "coding": [{ "system": system(&c.scheme), "code": c.code, "display": c.meaning }] });
    if let Some(t) = text {
        v["text"] = json!(t);
    }
    v
}

/// `urn:uuid:` of a UUID v5 under the delivery id, stable across attempts.
fn urn(delivery_id: &str, what: &str) -> String {
    let base = Uuid::parse_str(delivery_id).unwrap_or(Uuid::NAMESPACE_OID);
    format!("urn:uuid:{}", Uuid::new_v5(&base, what.as_bytes()))
}

/// DICOM DA (YYYYMMDD) as a FHIR date.
fn fhir_date(da: &str) -> Option<String> {
    let d = da.trim();
    (d.len() == 8 && d.chars().all(|c| c.is_ascii_digit())).then(|| format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]))
}

/// The transaction Bundle for `event`.
pub fn bundle(event: &Event, delivery_id: &str) -> Json {
    let s = &event.study;
    let status = match event.status {
        ResultStatus::Final => "final",
        ResultStatus::Corrected => "corrected",
    };
    let device_url = urn(delivery_id, "device");
    let patient_url = urn(delivery_id, "patient");
    let report_url = urn(delivery_id, "report");
    let model_id = format!("{}-{}", event.model.name, event.model.version);
    let issued = event.result_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let effective =
        s.study_date.as_deref().and_then(fhir_date).unwrap_or_else(|| event.last_image_at.date_naive().to_string());

    let mut entries = vec![json!({
        "fullUrl": device_url,
        "resource": {
            "resourceType": "Device",
            "identifier": [{ "system": "urn:firstread:model", "value": model_id }],
            "manufacturer": "firstread",
            "deviceName": [{ "name": event.model.name, "type": "model-name" }],
            "version": [{ "value": event.model.version }],
        },
        "request": { "method": "POST", "url": "Device", "ifNoneExist": format!("identifier=urn:firstread:model|{model_id}") },
    })];

    let mut patient = json!({ "resourceType": "Patient" });
    let mut request = json!({ "method": "POST", "url": "Patient" });
    if let Some(id) = s.patient_id.as_deref().filter(|i| !i.trim().is_empty()) {
        patient["identifier"] = json!([{ "value": id.trim() }]);
        request["ifNoneExist"] = json!(format!("identifier={}", id.trim()));
    }
    if let Some(pn) = s.patient_name.as_deref().filter(|n| !n.trim().is_empty()) {
        let alphabetic = pn.split('=').next().unwrap_or("");
        let parts: Vec<&str> = alphabetic.split('^').map(str::trim).collect();
        let mut name = json!({ "text": parts.iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join(" ") });
        if let Some(family) = parts.first().filter(|f| !f.is_empty()) {
            name["family"] = json!(family);
        }
        let given: Vec<&str> = parts.iter().skip(1).take(2).filter(|g| !g.is_empty()).copied().collect();
        if !given.is_empty() {
            name["given"] = json!(given);
        }
        patient["name"] = json!([name]);
    }
    if let Some(birth) = s.patient_birth_date.as_deref().and_then(fhir_date) {
        patient["birthDate"] = json!(birth);
    }
    if let Some(sex) = s.patient_sex.as_deref() {
        let gender = match sex.trim() {
            "M" => "male",
            "F" => "female",
            "O" => "other",
            _ => "unknown",
        };
        patient["gender"] = json!(gender);
    }
    entries.push(json!({ "fullUrl": patient_url, "resource": patient, "request": request }));

    let mut results = Vec::new();
    for (i, m) in event.measurements.iter().enumerate() {
        let url = urn(delivery_id, &format!("observation-{i}"));
        let site = match m.laterality {
            Some(firstread_findings::Side::Left) => ("44029006", "Left lung structure"),
            Some(firstread_findings::Side::Right) => ("3341006", "Right lung structure"),
            None => ("39607008", "Lung structure"),
        };
        let mut obs = json!({
            "resourceType": "Observation",
            "status": status,
            "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging" }] }],
            "code": codeable(&m.concept, Some(&m.label)),
            "subject": { "reference": patient_url },
            "effectiveDateTime": effective,
            "issued": issued,
            "device": { "reference": device_url },
            "bodySite": { "coding": [{ "system": "http://snomed.info/sct", "code": site.0, "display": site.1 }] },
        });
        match &m.value {
            Value::Numeric { value, ucum, unit } => {
                obs["valueQuantity"] =
                    json!({ "value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": ucum });
            }
            Value::Code(c) => obs["valueCodeableConcept"] = codeable(c, None),
            Value::Text { text } => obs["valueString"] = json!(text),
        }
        if let Some(abnormal) = m.abnormal {
            let (code, display) = if abnormal { ("A", "Abnormal") } else { ("N", "Normal") };
            obs["interpretation"] = json!([{ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": code, "display": display }] }]);
        }
        if let Some(range) = &m.reference_range {
            obs["referenceRange"] = json!([{ "text": range }]);
        }
        results.push(json!({ "reference": url }));
        entries.push(json!({ "fullUrl": url, "resource": obs, "request": { "method": "POST", "url": "Observation" } }));
    }

    let mut conclusion = event.summary.clone();
    for caution in &event.cautions {
        conclusion.push_str(&format!(" Caution: {caution}"));
    }
    conclusion.push_str(&format!(" {}", event.notice));
    let mut report = json!({
        "resourceType": "DiagnosticReport",
        "identifier": [{ "system": "urn:firstread:report", "value": format!("{}/{}/{}/{}",
            s.study_instance_uid, s.study_version, event.model.name, event.model.version) }],
        "status": status,
        "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology" }] }],
        "code": { "coding": [{ "system": "http://loinc.org", "code": "24627-2", "display": "CT Chest" }], "text": "CT chest first read" },
        "subject": { "reference": patient_url },
        "effectiveDateTime": effective,
        "issued": issued,
        "performer": [{ "display": format!("firstread {} {}", event.model.name, event.model.version) }],
        "result": results,
        "imagingStudy": [{ "identifier": { "system": "urn:dicom:uid", "value": format!("urn:oid:{}", s.study_instance_uid) } }],
        "conclusion": conclusion,
    });
    if let Some(class) = &event.extent_class {
        report["conclusionCode"] = json!([codeable(class, None)]);
    }
    entries.push(json!({ "fullUrl": report_url, "resource": report, "request": { "method": "POST", "url": "DiagnosticReport" } }));

    json!({
        "resourceType": "Bundle",
        "identifier": { "system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{delivery_id}") },
        "type": "transaction",
        "timestamp": issued,
        "entry": entries,
    })
}

/// POSTs the Bundle to the channel's base URL once (`application/fhir+json`).
///
/// # Errors
/// [`DeliveryError`]: 2xx delivered; 408, 425, 429, 5xx and connection failures retried; other
/// answers (an OperationOutcome rejecting the Bundle) permanent.
pub async fn post(http: &reqwest::Client, channel: &Channel, bundle: &Json) -> Result<String, DeliveryError> {
    let url = channel.url.as_deref().ok_or_else(|| DeliveryError::Permanent("fhir channel without url".into()))?;
    let body = serde_json::to_vec(bundle).map_err(|e| DeliveryError::Permanent(format!("bundle: {e}")))?;
    let mut request = http
        .post(url)
        .timeout(channel.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/fhir+json")
        .header(reqwest::header::ACCEPT, "application/fhir+json");
    if let Some(token) = &channel.bearer_token {
        request = request.bearer_auth(token);
    }
    crate::send(request.body(body), url).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_systems() {
        assert_eq!(fhir_date("20200314").as_deref(), Some("2020-03-14"));
        assert_eq!(fhir_date("2020031"), None);
        assert_eq!(system("SCT"), "http://snomed.info/sct");
        assert_eq!(system("99FIRSTREAD"), "urn:firstread:codes:99firstread");
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(urn(id, "device"), urn(id, "device"), "stable across attempts");
        assert_ne!(urn(id, "device"), urn(id, "patient"));
    }
}
