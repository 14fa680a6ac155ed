//! HL7 v2.5.1 ORU^R01 (unsolicited observation result, HL7 v2.5.1 chapter 7) over MLLP (HL7
//! v2.5.1 Appendix C, Minimal Lower Layer Protocol): one message per delivery, original-mode
//! acknowledgement awaited (MSA-1 `AA` or `CA` delivered; `AE`, `AR`, `CE`, `CR`, no answer or a
//! broken connection retried).
//!
//! - MSH: firstread as the sending application, UTF-8 (MSH-18 `UNICODE UTF-8`); MSH-10 the
//!   delivery id (the same on every attempt).
//! - PID: Patient ID, name (DICOM PN reordered into XPN), birth date, sex.
//! - OBR: the study: placer order number = Accession Number, filler order number = Study Instance
//!   UID, service LOINC 24627-2 "CT Chest", OBR-25 `F` (final) or `C` (correction).
//! - OBX: one per measurement: `NM` with UCUM units, `CWE` for coded values, `TX` for text; the
//!   side in OBX-4 (sub-id `left` / `right`); OBX-8 `A` (abnormal) or `N`; OBX-18 the model; then
//!   the summary and the pre-read notice as `TX`.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Channel;
use crate::event::{Event, ResultStatus, Value};
use crate::DeliveryError;

/// MLLP start block (VT).
pub const START_BLOCK: u8 = 0x0b;
/// MLLP end block (FS) followed by CR.
pub const END_BLOCK: [u8; 2] = [0x1c, 0x0d];
/// The largest acknowledgement read (bytes).
const MAX_ACK: usize = 1 << 20;

/// Escapes a value for a field (HL7 v2.5.1 2.7.1): the separators and the escape character
/// itself; line breaks become `\.br\`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '&' => out.push_str("\\T\\"),
            '~' => out.push_str("\\R\\"),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\.br\\");
            }
            '\n' => out.push_str("\\.br\\"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A DICOM PN (`Family^Given^Middle^Prefix^Suffix`, the alphabetic group) as an HL7 XPN
/// (`Family^Given^Middle^Suffix^Prefix`), each component escaped.
pub fn xpn(pn: &str) -> String {
    let alphabetic = pn.split('=').next().unwrap_or("");
    let c: Vec<String> = alphabetic.split('^').map(|p| escape(p.trim())).collect();
    let get = |i: usize| c.get(i).map(String::as_str).unwrap_or("");
    let parts = [get(0), get(1), get(2), get(4), get(3)];
    let n = parts.iter().rposition(|p| !p.is_empty()).map_or(0, |i| i + 1);
    parts[..n].join("^")
}

/// MSH-10 from a delivery id: its first 20 alphanumerics (ST, 20 in HL7 v2.5.1).
pub fn control_id(delivery_id: &str) -> String {
    delivery_id.chars().filter(char::is_ascii_alphanumeric).take(20).collect()
}

fn hl7_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M%S+0000").to_string()
}

/// The ORU^R01 for `event`, segments separated by CR.
pub fn oru_r01(event: &Event, channel: &Channel, delivery_id: &str, now: DateTime<Utc>) -> String {
    let e = |o: &Option<String>| o.as_deref().map(escape).unwrap_or_default();
    let s = &event.study;
    let status = match event.status {
        ResultStatus::Final => "F",
        ResultStatus::Corrected => "C",
    };
    let model = format!("{}-{}^firstread", escape(&event.model.name), escape(&event.model.version));
    let mut m = String::new();
    let _ = write!(
        m,
        "MSH|^~\\&|FIRSTREAD|{}|{}|{}|{}||ORU^R01^ORU_R01|{}|P|2.5.1|||||||UNICODE UTF-8\r",
        escape(&s.sender),
        escape(&channel.receiving_application),
        escape(&channel.receiving_facility),
        hl7_time(now),
        control_id(delivery_id),
    );
    let _ = write!(
        m,
        "PID|1||{}||{}||{}|{}\r",
        e(&s.patient_id),
        s.patient_name.as_deref().map(xpn).unwrap_or_default(),
        e(&s.patient_birth_date),
        e(&s.patient_sex),
    );
    let observed = format!("{}{}", s.study_date.as_deref().unwrap_or(""), s.study_time.as_deref().unwrap_or(""));
    let observed: String = observed.chars().filter(char::is_ascii_digit).take(14).collect();
    // OBR-2 placer, -3 filler, -4 service, -7 observation time, -22 status change, -24 section, -25 status
    let _ = write!(
        m,
        "OBR|1|{}|{}^FIRSTREAD|24627-2^CT Chest^LN|||{}|||||||||||||||{}||CT|{}\r",
        e(&s.accession_number),
        escape(&s.study_instance_uid),
        observed,
        hl7_time(event.result_at),
        status,
    );
    let mut set_id = 0;
    let mut obx =
        |m: &mut String, kind: &str, id: String, sub: &str, value: String, units: String, range: &str, flag: &str| {
            set_id += 1;
            let _ = write!(
                m,
                "OBX|{set_id}|{kind}|{id}|{sub}|{value}|{units}|{range}|{flag}|||{status}|||{}||||{model}\r",
                hl7_time(event.result_at)
            );
        };
    for r in &event.measurements {
        let id = format!("{}^{}^{}", escape(&r.concept.code), escape(&r.concept.meaning), escape(&r.concept.scheme));
        let sub = r.laterality.map_or("", |s| s.name());
        let flag = match r.abnormal {
            Some(true) => "A",
            Some(false) => "N",
            None => "",
        };
        let range = r.reference_range.as_deref().map(escape).unwrap_or_default();
        match &r.value {
            Value::Numeric { value, ucum, unit } => obx(
                &mut m,
                "NM",
                id,
                sub,
                format_number(*value),
                format!("{}^{}^UCUM", escape(ucum), escape(unit)),
                &range,
                flag,
            ),
            Value::Code(c) => obx(
                &mut m,
                "CWE",
                id,
                sub,
                format!("{}^{}^{}", escape(&c.code), escape(&c.meaning), escape(&c.scheme)),
                String::new(),
                &range,
                flag,
            ),
            Value::Text { text } => obx(&mut m, "TX", id, sub, escape(text), String::new(), &range, flag),
        }
    }
    let summary = "SUMMARY^First-read summary^99FIRSTREAD".to_owned();
    obx(&mut m, "TX", summary, "", escape(&event.summary), String::new(), "", "");
    for caution in &event.cautions {
        obx(&mut m, "TX", "CAUTION^Caution^99FIRSTREAD".into(), "", escape(caution), String::new(), "", "");
    }
    obx(&mut m, "TX", "NOTICE^Pre-read notice^99FIRSTREAD".into(), "", escape(&event.notice), String::new(), "", "");
    m
}

/// Numbers without trailing zeros ("22.5", "15").
fn format_number(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Sends `message` (whose MSH-10 is `control`) framed by MLLP to the channel's address and waits
/// for its acknowledgement.
///
/// # Errors
/// [`DeliveryError::Retry`] for every failure but a missing address: the RIS may be down, busy,
/// or reject what a later attempt (after its configuration is fixed) will deliver.
pub async fn send_mllp(channel: &Channel, message: &str, control: &str) -> Result<String, DeliveryError> {
    let timeout = channel.timeout;
    let address =
        channel.address.as_deref().ok_or_else(|| DeliveryError::Permanent("hl7 channel without address".into()))?;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| DeliveryError::Retry(format!("MLLP connect to {address}: {e}")))?;
        let mut frame = Vec::with_capacity(message.len() + 3);
        frame.push(START_BLOCK);
        frame.extend_from_slice(message.as_bytes());
        frame.extend_from_slice(&END_BLOCK);
        stream.write_all(&frame).await.map_err(|e| DeliveryError::Retry(format!("MLLP send to {address}: {e}")))?;
        let mut ack = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| DeliveryError::Retry(format!("MLLP read from {address}: {e}")))?;
            if n == 0 {
                return Err(DeliveryError::Retry(format!("{address} closed the connection before acknowledging")));
            }
            ack.extend_from_slice(&buf[..n]);
            if ack.windows(2).any(|w| w == END_BLOCK) {
                break;
            }
            if ack.len() > MAX_ACK {
                return Err(DeliveryError::Retry(format!("{address}: acknowledgement larger than {MAX_ACK} bytes")));
            }
        }
        Ok(ack)
    };
    let ack = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| DeliveryError::Retry(format!("no acknowledgement from {address} within {timeout:?}")))??;
    acknowledgement(&String::from_utf8_lossy(&ack), control)
}

/// Reads an MLLP-framed ACK: `Ok(code)` for AA / CA acknowledging `control`, else why not.
///
/// # Errors
/// [`DeliveryError::Retry`] with MSA-1, MSA-3 and the ERR segment's text.
pub fn acknowledgement(framed: &str, control: &str) -> Result<String, DeliveryError> {
    let body = framed.trim_start_matches(char::from(START_BLOCK)).split(char::from(END_BLOCK[0])).next().unwrap_or("");
    let segments: Vec<&str> = body.split(['\r', '\n']).filter(|s| !s.is_empty()).collect();
    let Some(msa) = segments.iter().find(|s| s.starts_with("MSA|")) else {
        return Err(DeliveryError::Retry("acknowledgement without MSA segment".into()));
    };
    let fields: Vec<&str> = msa.split('|').collect();
    let code = fields.get(1).copied().unwrap_or("");
    let acked = fields.get(2).copied().unwrap_or("");
    if acked != control {
        return Err(DeliveryError::Retry(format!("acknowledgement for message {acked:?}, not {control:?}")));
    }
    match code {
        "AA" | "CA" => Ok(code.to_owned()),
        _ => {
            let text = fields.get(3).copied().unwrap_or("");
            let err = segments.iter().find(|s| s.starts_with("ERR|")).copied().unwrap_or("");
            Err(DeliveryError::Retry(format!("RIS answered {code}: {text} {err}").trim().to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_separators_and_reorders_names() {
        assert_eq!(escape("a|b^c&d~e\\f\r\ng"), "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\g");
        assert_eq!(xpn("Doe^Jane^Q^Dr^PhD=ドウ^ジェーン"), "Doe^Jane^Q^PhD^Dr");
        assert_eq!(xpn("Doe^Jane"), "Doe^Jane");
        assert_eq!(xpn("O|Brien"), "O\\F\\Brien");
        assert_eq!(format_number(22.50), "22.5");
        assert_eq!(format_number(15.0), "15");
    }

    #[test]
    fn acknowledgements() {
        let ack = |code: &str, id: &str| format!("\x0bMSH|^~\\&|RIS|||||||ACK|1|P|2.5.1\rMSA|{code}|{id}|busy\r\x1c\r");
        assert_eq!(acknowledgement(&ack("AA", "X1"), "X1"), Ok("AA".into()));
        assert!(
            matches!(acknowledgement(&ack("AE", "X1"), "X1"), Err(DeliveryError::Retry(m)) if m.contains("AE: busy"))
        );
        assert!(matches!(acknowledgement(&ack("AR", "X1"), "X1"), Err(DeliveryError::Retry(_))));
        assert!(
            matches!(acknowledgement(&ack("AA", "X2"), "X1"), Err(DeliveryError::Retry(_))),
            "another message's ACK"
        );
        assert!(matches!(acknowledgement("\x0bMSH|x\r\x1c\r", "X1"), Err(DeliveryError::Retry(_))));
        assert_eq!(control_id("0f8fad5b-d9cb-469f-a165-70867728950e"), "0f8fad5bd9cb469fa165");
    }
}
