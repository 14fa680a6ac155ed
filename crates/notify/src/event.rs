//! What a notification says: one [`Event`] per (study version, model), built when the analysis
//! ends, stored as the delivery job's payload, and rendered by each channel (webhook JSON, HL7
//! OBX segments, FHIR Observations). Every measurement carries its code, unit and display label
//! from `firstread_findings::vocabulary`, the same as the SR's.

use chrono::{DateTime, Utc};
use firstread_findings::measures::{Classification, Measures};
use firstread_findings::vocabulary::{self, Reported, ReportedValue};
use firstread_findings::{ExtentClass, Findings, Side};
use serde::{Deserialize, Serialize};

/// The notice every message carries.
pub const PRE_READ_NOTICE: &str =
    "Automated pre-read aid for triage, not a diagnosis: to be confirmed by a radiologist on the images.";

/// What happened to the study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The model read the study.
    FirstRead,
    /// The model refused the study (with a reason).
    Refused,
}

/// Whether this message is the first for the study on this (rule, channel), or replaces one
/// sent for an earlier study version (late images, re-analysis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// First result for this study on this channel (HL7 `F`, FHIR `final`).
    Final,
    /// Replaces the result of an earlier study version (HL7 `C`, FHIR `corrected`).
    Corrected,
}

/// The study the result is about (from the index; Patient and Study modules of the images).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Study {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Study version (1, then +1 per accepted late arrival).
    pub study_version: i32,
    /// Accession Number.
    pub accession_number: Option<String>,
    /// Patient ID.
    pub patient_id: Option<String>,
    /// Patient's Name, DICOM PN (`Family^Given^Middle^Prefix^Suffix`).
    pub patient_name: Option<String>,
    /// Patient's Birth Date (DA, YYYYMMDD).
    pub patient_birth_date: Option<String>,
    /// Patient's Sex (M, F, O).
    pub patient_sex: Option<String>,
    /// Study Date (DA) and Study Time (TM).
    pub study_date: Option<String>,
    /// Study Time (TM).
    pub study_time: Option<String>,
    /// Study Description.
    pub study_description: Option<String>,
    /// Calling AE title of the association that sent the study.
    pub sender: String,
    /// The site (hospital) the study belongs to.
    #[serde(default)]
    pub site: String,
}

/// The model that produced the result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    /// Package name.
    pub name: String,
    /// Package version.
    pub version: String,
}

/// A coded concept (code value, coding scheme designator, meaning), as in the SR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coded {
    /// Code Value.
    pub code: String,
    /// Coding Scheme Designator (`SCT`, `DCM`, `99FIRSTREAD`).
    pub scheme: String,
    /// Code Meaning.
    pub meaning: String,
}

impl From<vocabulary::Code> for Coded {
    fn from(c: vocabulary::Code) -> Self {
        Coded { code: c.value.into(), scheme: c.scheme.into(), meaning: c.meaning.into() }
    }
}

/// A measurement's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Value {
    /// A number with its unit (UCUM code and display symbol).
    Numeric {
        /// The value, rounded to `decimals`.
        value: f64,
        /// UCUM code.
        ucum: String,
        /// Display symbol.
        unit: String,
    },
    /// A coded value (an extent class, a suggested category).
    Code(Coded),
    /// Free text.
    Text {
        /// The text.
        text: String,
    },
}

/// One measurement or finding of the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Its name in the findings JSON (with the side where it has one, e.g. `involvement_pct.left`).
    pub key: String,
    /// Its concept.
    pub concept: Coded,
    /// Display label (e.g. "lung involvement, left").
    pub label: String,
    /// The value.
    pub value: Value,
    /// Which lung, where it is per side.
    pub laterality: Option<Side>,
    /// Outside its normal range (`Some(true)`), within it (`Some(false)`), or no range (`None`).
    pub abnormal: Option<bool>,
    /// The normal range as text (HL7 OBX-7), where there is one.
    pub reference_range: Option<String>,
}

impl From<Reported> for Measurement {
    fn from(r: Reported) -> Self {
        let value = match r.value {
            ReportedValue::Number { value, unit, decimals } => {
                let scale = 10f64.powi(i32::try_from(decimals).unwrap_or(2));
                Value::Numeric {
                    value: (value * scale).round() / scale,
                    ucum: unit.ucum.into(),
                    unit: unit.symbol.into(),
                }
            }
            ReportedValue::Coded(c) => Value::Code(c.into()),
            ReportedValue::Text(text) => Value::Text { text },
        };
        let key = match r.side {
            Some(side) => format!("{}.{}", r.term.key, side.name()),
            None => r.term.key.to_owned(),
        };
        let label = match r.side {
            Some(side) => format!("{}, {}", r.term.label, side.name()),
            None => r.term.label.to_owned(),
        };
        Measurement {
            key,
            concept: r.term.code.into(),
            label,
            value,
            laterality: r.side,
            abnormal: r.abnormal,
            reference_range: r.reference_range.map(str::to_owned),
        }
    }
}

/// The SR that holds the result, for a link from the message to the viewer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultObject {
    /// Series Instance UID of the SR.
    pub series_instance_uid: String,
    /// SOP Instance UID of the SR.
    pub sop_instance_uid: String,
}

/// One notification's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// First or replacing message.
    pub status: ResultStatus,
    /// The study version whose message this one replaces.
    pub supersedes_study_version: Option<i32>,
    /// The rule that sent it.
    pub rule: String,
    /// The study.
    pub study: Study,
    /// The model.
    pub model: Model,
    /// SFR extent class of lung involvement (coded), when read.
    pub extent_class: Option<Coded>,
    /// The highest extent class the method's validated error allows, when it is above
    /// `extent_class` ("possibly moderate"); rules match on it (the sickest first).
    pub possible_extent_class: Option<Coded>,
    /// CT severity score 0-30 (Francone 2020), when read.
    pub severity_score: Option<u8>,
    /// Lung involvement, both lungs (%), when read.
    pub involvement_pct: Option<f64>,
    /// The classes of a package described by its vocabulary (its manifest's
    /// `[[classifications]]`), as decided; rules match on them (`classification`, `class_in`,
    /// `abnormal`). Absent from the JSON when there are none (a COVID-19 read, a refusal).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classifications: Vec<Classified>,
    /// One line a person reads first.
    pub summary: String,
    /// Why the study was refused.
    pub refusal_reason: Option<String>,
    /// Every reported measurement and finding.
    pub measurements: Vec<Measurement>,
    /// What the reader must know about this result.
    pub cautions: Vec<String>,
    /// The first-read SR, when written.
    pub sr: Option<ResultObject>,
    /// When the last image of the study version was received.
    pub last_image_at: DateTime<Utc>,
    /// When the result was ready.
    pub result_at: DateTime<Utc>,
    /// [`PRE_READ_NOTICE`].
    pub notice: String,
}

/// One classification of a vocabulary result: the class its value falls in and the classes the
/// method's validated error allows besides ("possibly ...").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classified {
    /// The classification's key in the manifest (`emphysema`).
    pub key: String,
    /// Its display label ("Emphysema by quantitative CT").
    pub label: String,
    /// The class: its band's `value` (`none`); `None` when the value was not measured.
    pub class: Option<String>,
    /// The class's display label ("no emphysema by LAA-950 (< 5 %)").
    pub class_label: Option<String>,
    /// The other classes within the method's validated error (band `value`s).
    #[serde(default)]
    pub possible: Vec<String>,
    /// Whether the class or a possible one is a band marked `abnormal`.
    pub abnormal: bool,
}

impl Classified {
    /// The classes the result states: the class, then the possible ones.
    pub fn stated(&self) -> impl Iterator<Item = &str> {
        self.class.iter().chain(&self.possible).map(String::as_str)
    }
}

impl From<&Classification> for Classified {
    fn from(c: &Classification) -> Self {
        Classified {
            key: c.key.clone(),
            label: c.label.clone(),
            class: c.class.as_ref().map(|b| b.value.clone()),
            class_label: c.class.as_ref().map(|b| b.label.clone()),
            possible: c.possible.iter().map(|b| b.value.clone()).collect(),
            abnormal: c.abnormal(),
        }
    }
}

/// What the analysis produced.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// Read, with its findings and SR.
    Read(&'a Findings, Option<&'a ResultObject>),
    /// Read by a model described by the measurement vocabulary alone (no findings extension),
    /// with its measurements, classes and SR.
    Measured(&'a Measures, Option<&'a ResultObject>),
    /// Refused, with the reason.
    Refused(&'a str),
}

impl Event {
    /// The event for `outcome` of `model` on `study`. `status` and `supersedes_study_version`
    /// start as a first message; [`Event::correcting`] turns it into a correction.
    pub fn new(
        rule: &str,
        study: Study,
        model: Model,
        outcome: Outcome<'_>,
        last_image_at: DateTime<Utc>,
        result_at: DateTime<Utc>,
    ) -> Self {
        let mut event = Event {
            kind: EventKind::FirstRead,
            status: ResultStatus::Final,
            supersedes_study_version: None,
            rule: rule.to_owned(),
            study,
            model,
            extent_class: None,
            possible_extent_class: None,
            severity_score: None,
            involvement_pct: None,
            classifications: Vec::new(),
            summary: String::new(),
            refusal_reason: None,
            measurements: Vec::new(),
            cautions: Vec::new(),
            sr: None,
            last_image_at,
            result_at,
            notice: PRE_READ_NOTICE.to_owned(),
        };
        match outcome {
            Outcome::Read(f, sr) => {
                event.extent_class = Some(vocabulary::extent_code(f.extent_class).into());
                let highest = f.uncertainty.highest_class();
                event.possible_extent_class =
                    (highest > f.extent_class).then(|| vocabulary::extent_code(highest).into());
                event.severity_score = Some(f.severity_score);
                event.involvement_pct = Some((f.total.involvement_pct * 10.0).round() / 10.0);
                event.measurements = vocabulary::reported(f).into_iter().map(Measurement::from).collect();
                event.cautions.clone_from(&f.cautions);
                event.summary = vocabulary::summary_text(f);
                event.sr = sr.cloned();
            }
            Outcome::Measured(m, sr) => {
                event.measurements = measured(m);
                event.classifications = m.classifications.iter().map(Classified::from).collect();
                event.summary = m.summary_text();
                event.sr = sr.cloned();
            }
            Outcome::Refused(reason) => {
                event.kind = EventKind::Refused;
                event.refusal_reason = Some(reason.to_owned());
                event.summary = format!("Not analysed: {reason}");
            }
        }
        event
    }

    /// This event as the correction of what was sent for `earlier` study version.
    pub fn correcting(mut self, earlier: i32) -> Self {
        self.status = ResultStatus::Corrected;
        self.supersedes_study_version = Some(earlier);
        self
    }

    /// The extent class, decoded.
    pub fn extent(&self) -> Option<ExtentClass> {
        decode_extent(self.extent_class.as_ref()?)
    }

    /// The highest extent class the result allows: the possible one when there is one, else
    /// the class.
    pub fn highest_extent(&self) -> Option<ExtentClass> {
        self.possible_extent_class.as_ref().and_then(decode_extent).max(self.extent())
    }
}

/// The classes (coded, flagged by their band, the possible ones listed after) and the whole-region
/// measurements of a vocabulary result, in manifest order.
fn measured(m: &Measures) -> Vec<Measurement> {
    let coded = |c: &firstread_findings::measures::CodeSpec| Coded {
        code: c.value.clone(),
        scheme: c.scheme.clone(),
        meaning: c.meaning.clone(),
    };
    let mut out = Vec::new();
    for c in &m.classifications {
        for (band, possible) in c.class.iter().map(|b| (b, false)).chain(c.possible.iter().map(|b| (b, true))) {
            out.push(Measurement {
                key: if possible { format!("{}.possible", c.key) } else { c.key.clone() },
                concept: coded(&band.code),
                label: if possible { format!("{}, possibly", c.label) } else { c.label.clone() },
                value: Value::Code(coded(&band.code)),
                laterality: None,
                abnormal: Some(band.abnormal),
                reference_range: None,
            });
        }
    }
    for x in m.measurements.iter().filter(|x| x.zone.is_none()) {
        let Some(value) = x.value else { continue };
        let scale = 10f64.powi(i32::try_from(x.kind.decimals()).unwrap_or(1));
        out.push(Measurement {
            key: format!("{}.{}", x.key, x.region),
            concept: coded(&x.code),
            label: format!("{}, {}", x.label, x.region.replace('_', " ")),
            value: Value::Numeric {
                value: (value * scale).round() / scale,
                ucum: x.unit.into(),
                unit: x.unit_symbol.into(),
            },
            laterality: None,
            abnormal: None,
            reference_range: None,
        });
    }
    out
}

fn decode_extent(code: &Coded) -> Option<ExtentClass> {
    ExtentClass::ALL.into_iter().find(|c| vocabulary::extent_code(*c).value == code.code)
}

#[cfg(test)]
mod tests {
    use firstread_findings::measures::{classify, Band, ClassificationSpec, CodeSpec, Kind, Measurement as Measured};

    use super::*;

    fn code(value: &str, meaning: &str) -> CodeSpec {
        CodeSpec { scheme: "99FIRSTREAD".into(), value: value.into(), meaning: meaning.into() }
    }

    #[test]
    fn a_vocabulary_result_carries_its_classes_and_values() {
        let band = |below: Option<f64>, value: &str, abnormal| Band {
            below,
            value: value.into(),
            label: value.into(),
            code: code(value, value),
            abnormal,
        };
        let spec = ClassificationSpec {
            key: "emphysema".into(),
            label: "Emphysema".into(),
            measurement: "laa".into(),
            region: "both".into(),
            absolute_error: 1.0,
            code: code("EMPH", "Emphysema"),
            source: None,
            bands: vec![band(Some(5.0), "none", false), band(None, "emphysema", true)],
        };
        let measured = |zone, value| Measured {
            key: "laa".into(),
            label: "%LAA-950".into(),
            code: code("LAA-950", "Lung volume at or below -950 HU, percent"),
            kind: Kind::PercentAtOrBelow,
            region: "both".into(),
            zone,
            value: Some(value),
            unit: "%",
            unit_symbol: "%",
            voxels: 1000,
        };
        let measures = Measures {
            measurements: vec![measured(None, 4.567), measured(Some(firstread_findings::Level::Upper), 9.0)],
            classifications: vec![classify(&spec, Some(4.567))],
        };
        let event = Event::new(
            "r",
            Study::default(),
            Model::default(),
            Outcome::Measured(&measures, None),
            Default::default(),
            Default::default(),
        );
        assert_eq!(event.kind, EventKind::FirstRead);
        assert_eq!(event.summary, "Emphysema: none, possibly emphysema");
        let keys: Vec<(&str, Option<bool>)> = event.measurements.iter().map(|m| (m.key.as_str(), m.abnormal)).collect();
        // the class, the class within the error (flagged), the whole-lung value; no zone values
        assert_eq!(keys, [("emphysema", Some(false)), ("emphysema.possible", Some(true)), ("laa.both", None)]);
        assert_eq!(event.measurements[2].value, Value::Numeric { value: 4.6, ucum: "%".into(), unit: "%".into() });
        assert_eq!(event.measurements[2].concept.code, "LAA-950");
        assert!(event.extent_class.is_none() && event.severity_score.is_none());
        // the class as decided, for the rules: none, possibly emphysema (abnormal)
        assert_eq!(
            event.classifications,
            [Classified {
                key: "emphysema".into(),
                label: "Emphysema".into(),
                class: Some("none".into()),
                class_label: Some("none".into()),
                possible: vec!["emphysema".into()],
                abnormal: true,
            }]
        );
        let json = serde_json::to_value(&event).expect("json");
        assert_eq!(json["classifications"][0]["possible"], serde_json::json!(["emphysema"]));
        // a COVID-19 read or a refusal has none, and its JSON has no such key
        let refused = Event::new(
            "r",
            Study::default(),
            Model::default(),
            Outcome::Refused("x"),
            Default::default(),
            Default::default(),
        );
        let json = serde_json::to_value(&refused).expect("json");
        assert!(json.get("classifications").is_none(), "{json}");
        let back: Event = serde_json::from_value(json).expect("an earlier payload reads back");
        assert!(back.classifications.is_empty());
    }
}
