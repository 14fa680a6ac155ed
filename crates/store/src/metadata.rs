//! The DICOM JSON metadata of an instance (PS3.18 F.2), computed once when the instance is
//! stored and kept in the index, so WADO-RS metadata and QIDO-RS answers never open a file.
//!
//! Pixel Data is not inlined: it becomes a `BulkDataURI` (PS3.18 F.2.6) relative to the
//! DICOMweb root (`studies/{study}/series/{series}/instances/{instance}/bulk/7FE00010`); the
//! DICOMweb server prefixes the root it is reached at. The stored transfer syntax is added as
//! Available Transfer Syntax UID (0008,3002), which viewers use to decode frames "as stored".

use dicom_core::header::Header;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde_json::{json, Map, Value};

use crate::attributes::{int, InstanceAttributes};

/// The `BulkDataURI` member text the stored metadata uses; the DICOMweb server rewrites it to
/// an absolute URI by inserting its root after this prefix.
pub const BULK_DATA_URI_PREFIX: &str = "\"BulkDataURI\":\"";

/// Transfer syntaxes whose Pixel Data is encapsulated (PS3.5 A.4) have VR OB; native Pixel Data
/// with more than 8 bits allocated has VR OW (PS3.5 A.2, 8.2).
fn pixel_data_vr(obj: &InMemDicomObject, transfer_syntax_uid: &str) -> &'static str {
    let native = matches!(transfer_syntax_uid, "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1" | "1.2.840.10008.1.2.2");
    if native && int(obj, tags::BITS_ALLOCATED).unwrap_or(16) > 8 {
        "OW"
    } else {
        "OB"
    }
}

/// The DICOM JSON object (compact text) of `obj` without its Pixel Data (group 7FE0). When the
/// instance is an image (Rows present), Pixel Data is described by a relative `BulkDataURI`.
///
/// # Errors
/// A message when an element cannot be encoded as DICOM JSON (the caller stores no metadata
/// and the server reads the file instead).
pub fn metadata_json(obj: &InMemDicomObject, a: &InstanceAttributes) -> Result<String, String> {
    // a data set read up to Pixel Data is encoded as it is; one holding Pixel Data (built in
    // memory) without it, rather than encoding it inline only to drop it
    let without_pixels;
    let obj = if obj.iter().any(|e| e.tag().group() == 0x7FE0) {
        without_pixels = InMemDicomObject::from_element_iter(obj.iter().filter(|e| e.tag().group() != 0x7FE0).cloned());
        &without_pixels
    } else {
        obj
    };
    let mut value = dicom_json::to_value(obj).map_err(|e| e.to_string())?;
    if let Some(charset) = a.specific_character_set.as_deref().filter(|c| crate::charset::decodes(c)) {
        decode_text(&mut value, charset);
    }
    let Value::Object(map) = &mut value else { return Err("DICOM JSON of a data set is not an object".into()) };
    map.retain(|k, _| !k.starts_with("7FE0"));
    insert_tag(map, tags::AVAILABLE_TRANSFER_SYNTAX_UID, json!({"vr": "UI", "Value": [a.transfer_syntax_uid]}));
    if obj.get(tags::ROWS).is_some() {
        let uri = format!(
            "studies/{}/series/{}/instances/{}/bulk/7FE00010",
            a.study_instance_uid, a.series_instance_uid, a.sop_instance_uid
        );
        let vr = pixel_data_vr(obj, &a.transfer_syntax_uid);
        insert_tag(map, tags::PIXEL_DATA, json!({"vr": vr, "BulkDataURI": uri}));
    }
    // keys in tag order, as PS3.18 F.2.2 requires (serde_json's map keeps insertion order)
    let mut entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    map.extend(entries);
    serde_json::to_string(&value).map_err(|e| e.to_string())
}

/// Every string of the DICOM JSON tree decoded as `charset` says where the DICOM library did not
/// ([`crate::charset::decode`]: ISO 2022 code extensions, ISO_IR 148), sequence items included.
/// A person name's groups, which the JSON encoder split at every `=` byte (also the first half of
/// JIS X 0208 characters such as 女), are joined again, decoded, and split at the real delimiters.
fn decode_text(value: &mut Value, charset: &str) {
    if let Value::Object(members) = value {
        if members.get("vr").and_then(Value::as_str) == Some("PN") {
            if let Some(Value::Array(names)) = members.get_mut("Value") {
                for name in names.iter_mut() {
                    regroup_person_name(name, charset);
                }
            }
            return;
        }
    }
    match value {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(decoded) = crate::charset::decode(charset, s) {
                *s = decoded;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| decode_text(v, charset)),
        Value::Object(members) => members.values_mut().for_each(|v| decode_text(v, charset)),
        _ => {}
    }
}

/// One person name value `{Alphabetic, Ideographic, Phonetic}` decoded as a whole.
fn regroup_person_name(name: &mut Value, charset: &str) {
    let Value::Object(groups) = name else { return };
    let part = |key: &str| groups.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    let joined = PN_GROUPS.map(part).join("=");
    *name = person_name(&crate::charset::decode(charset, joined.trim_end_matches('=')));
}

/// A person name in the DICOM JSON model (PS3.18 F.2.2): its component groups, separated by `=`
/// in DICOM (PS3.5 6.2.1), as `Alphabetic`, `Ideographic` and `Phonetic`; empty groups left out.
pub fn person_name(v: &str) -> Value {
    let mut name = Map::new();
    for (key, group) in PN_GROUPS.into_iter().zip(v.splitn(3, '=')) {
        let group = group.trim_end();
        if !group.is_empty() {
            name.insert(key.into(), Value::from(group));
        }
    }
    Value::Object(name)
}

const PN_GROUPS: [&str; 3] = ["Alphabetic", "Ideographic", "Phonetic"];

fn insert_tag(map: &mut Map<String, Value>, tag: Tag, value: Value) {
    map.insert(format!("{:04X}{:04X}", tag.group(), tag.element()), value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    #[test]
    fn iso_2022_names_are_decoded_whole_and_split_at_their_real_delimiters() {
        // 女 is "=w" in JIS X 0208: the JSON encoder's split at '=' must not cut it
        let name = "Onna^Hanako=\u{1b}$B=w\u{1b}(B^\u{1b}$B2V;R\u{1b}(B";
        let obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, PrimitiveValue::from("\\ISO 2022 IR 87")),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from(name)),
        ]);
        // the attributes as `from_dataset` reads them: the Specific Character Set among them
        let attributes = |charset: &str| InstanceAttributes {
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            specific_character_set: Some(charset.into()),
            ..Default::default()
        };
        let a = attributes("\\ISO 2022 IR 87");
        let v: Value = serde_json::from_str(&metadata_json(&obj, &a).expect("json")).expect("parse");
        assert_eq!(v["00100010"]["Value"][0], json!({ "Alphabetic": "Onna^Hanako", "Ideographic": "女^花子" }));
        let a = attributes("ISO_IR 100");
        // another character set: left as it is
        let latin = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, PrimitiveValue::from("ISO_IR 100")),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("A\u{1b}B")),
        ]);
        let v: Value = serde_json::from_str(&metadata_json(&latin, &a).expect("json")).expect("parse");
        assert_eq!(v["00100010"]["Value"][0]["Alphabetic"], "A\u{1b}B");
        // ISO_IR 148: read by the DICOM library as ISO 8859-1 (Þ for the byte of Ş); the JSON and
        // the indexed attributes say Ş, in names and in other texts
        let turkish = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, PrimitiveValue::from("ISO_IR 148")),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Þahin^Gül=Ýpek")),
            DataElement::new(tags::STUDY_DESCRIPTION, VR::LO, PrimitiveValue::from("Toraks BT ðöðüs")),
        ]);
        let a = attributes("ISO_IR 148");
        let v: Value = serde_json::from_str(&metadata_json(&turkish, &a).expect("json")).expect("parse");
        assert_eq!(v["00100010"]["Value"][0], json!({ "Alphabetic": "Şahin^Gül", "Ideographic": "İpek" }));
        assert_eq!(v["00081030"]["Value"][0], "Toraks BT ğöğüs");
        assert_eq!(crate::attributes::text(&turkish, tags::PATIENT_NAME).as_deref(), Some("Şahin^Gül=İpek"));
    }

    #[test]
    fn pixel_data_becomes_a_relative_bulk_data_uri_and_keys_are_sorted() {
        let obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4")),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(512_u16)),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16)),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Doe^Jane")),
        ]);
        let a = InstanceAttributes {
            study_instance_uid: "1.2".into(),
            series_instance_uid: "1.2.3".into(),
            sop_instance_uid: "1.2.3.4".into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            ..InstanceAttributes::default()
        };
        let text = metadata_json(&obj, &a).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["7FE00010"]["BulkDataURI"], "studies/1.2/series/1.2.3/instances/1.2.3.4/bulk/7FE00010");
        assert_eq!(v["7FE00010"]["vr"], "OW");
        assert_eq!(v["00083002"]["Value"][0], "1.2.840.10008.1.2.1");
        assert_eq!(v["00100010"]["Value"][0]["Alphabetic"], "Doe^Jane");
        assert!(text.contains(&format!("{BULK_DATA_URI_PREFIX}studies/1.2/")));
        // an object built in memory with its Pixel Data gives the same JSON (not inlined)
        let mut with_pixels = obj.clone();
        with_pixels.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(vec![7u16; 16].into())));
        assert_eq!(metadata_json(&with_pixels, &a).unwrap(), text);
        assert!(!text.contains("InlineBinary"));
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
