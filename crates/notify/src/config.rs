//! The `[notify]` section: channels (where a message goes) and rules (which results go where).
//!
//! ```toml
//! [[notify.channels]]
//! name = "ris-webhook"
//! kind = "webhook"
//! url = "https://ris.example/hooks/firstread"
//! secret_file = "/etc/firstread/webhook.secret"
//!
//! [[notify.channels]]
//! name = "ris-hl7"
//! kind = "hl7"
//! address = "ris.example:2575"
//!
//! [[notify.rules]]
//! name = "critical"
//! channels = ["ris-webhook", "ris-hl7"]
//! extent_class_at_least = "extensive"
//! severity_score_at_least = 15
//! refused = true
//!
//! [[notify.rules]]
//! name = "emphysema"
//! channels = ["ris-hl7"]
//! models = ["emphysema-ct"]
//! classification = "emphysema"
//! abnormal = true
//! ```

use std::path::PathBuf;
use std::time::Duration;

use firstread_findings::measures::ClassificationSpec;
use firstread_findings::ExtentClass;
use serde::{Deserialize, Serialize};

/// Notification settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Where messages go.
    pub channels: Vec<Channel>,
    /// Which results are sent to which channels.
    pub rules: Vec<Rule>,
    /// Attempts per delivery before it is dead.
    pub max_attempts: i32,
    /// Delay after the first failed attempt (doubles per attempt).
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest delay between attempts.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Deliveries in flight at once per process.
    pub concurrency: usize,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            channels: Vec::new(),
            rules: Vec::new(),
            max_attempts: 8,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            concurrency: 2,
        }
    }
}

/// How a channel delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// JSON POST signed with HMAC-SHA256 ([`crate::webhook`]).
    Webhook,
    /// HL7 v2.5.1 ORU^R01 over MLLP ([`crate::hl7`]).
    Hl7,
    /// FHIR R4 transaction Bundle POSTed to the server's base URL ([`crate::fhir`]).
    Fhir,
}

impl ChannelKind {
    /// Its name in the configuration, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Hl7 => "hl7",
            ChannelKind::Fhir => "fhir",
        }
    }
}

/// One place messages go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// Unique name, used by rules and in job destinations (letters, digits, `-`, `_`).
    pub name: String,
    /// How it delivers.
    pub kind: ChannelKind,
    /// Webhook: the URL to POST to. FHIR: the server's base URL (the Bundle is POSTed there).
    #[serde(default)]
    pub url: Option<String>,
    /// HL7: the MLLP listener, `host:port`.
    #[serde(default)]
    pub address: Option<String>,
    /// Webhook: the HMAC-SHA256 key (prefer `secret_file`).
    #[serde(default)]
    pub secret: Option<String>,
    /// Webhook: a file holding the HMAC key (trailing newline ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// FHIR: a bearer token sent as `Authorization: Bearer ...`.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// HL7: MSH-5 Receiving Application.
    #[serde(default = "default_receiving_application")]
    pub receiving_application: String,
    /// HL7: MSH-6 Receiving Facility.
    #[serde(default)]
    pub receiving_facility: String,
    /// Time allowed for one attempt (HTTP answer, or the HL7 ACK).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_receiving_application() -> String {
    "RIS".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Which results a rule sends: a result matches when any criterion given matches (and the
/// sender, site and model are in `senders`, `sites` and `models` when those lists are given).
/// A rule without criteria matches every analysed result.
///
/// Criteria on a COVID-19 read (the `covid19-pneumonia` extension): `extent_class_at_least`,
/// `severity_score_at_least`, `involvement_pct_at_least`. Criteria on the classes of a package
/// described by its vocabulary (`[[classifications]]` in its manifest): `class_in`, `abnormal`,
/// each over the classification `classification` names (absent: any of the result's), and
/// `classification` alone (neither of the others given): the result has a class for it. A
/// class a result states is its class or a class within the method's validated error
/// ("possibly ..."), as the extent class's criterion takes the highest possible class.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique name (letters, digits, `-`, `_`).
    pub name: String,
    /// Channel names.
    pub channels: Vec<String>,
    /// Only studies from these calling AE titles; empty: all.
    #[serde(default)]
    pub senders: Vec<String>,
    /// Only studies of these sites (`[[peers]] site`); empty: all.
    #[serde(default)]
    pub sites: Vec<String>,
    /// SFR extent class at least this (`moderate`, `extensive`, `severe`, `critical`).
    #[serde(default)]
    pub extent_class_at_least: Option<ExtentClass>,
    /// CT severity score (0-30) at least this.
    #[serde(default)]
    pub severity_score_at_least: Option<u8>,
    /// Lung involvement (%) at least this.
    #[serde(default)]
    pub involvement_pct_at_least: Option<f64>,
    /// Studies the model refused (not a chest CT it can read, missing slices, ...).
    #[serde(default)]
    pub refused: bool,
    /// Only results of these model packages (manifest `name`); empty: every active package.
    #[serde(default)]
    pub models: Vec<String>,
    /// The classification (a manifest's `[[classifications]] key`, e.g. `emphysema`) that
    /// `class_in` and `abnormal` look at; given alone, a criterion: the result has a class for it.
    #[serde(default)]
    pub classification: Option<String>,
    /// A class the result states (its band `value`, e.g. `emphysema`, or one within the
    /// method's error) is one of these.
    #[serde(default)]
    pub class_in: Vec<String>,
    /// A class the result states is a band marked `abnormal` in the manifest.
    #[serde(default)]
    pub abnormal: bool,
}

/// What [`NotifyConfig::check_vocabulary`] knows of one active package: its name and its
/// manifest's classifications.
pub type Vocabulary<'a> = (&'a str, &'a [ClassificationSpec]);

/// Configuration errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Something in `[notify]` is wrong.
    #[error("notify: {0}")]
    Invalid(String),
}

impl NotifyConfig {
    /// Replaces every secret (webhook secrets, FHIR bearer tokens) by `mask`, for printing.
    pub fn redact(&mut self, mask: &str) {
        for ch in &mut self.channels {
            for secret in [&mut ch.secret, &mut ch.bearer_token] {
                if secret.is_some() {
                    *secret = Some(mask.into());
                }
            }
        }
    }

    /// Checks names, references and per-kind settings, and reads secret files.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the channel or rule.
    pub fn resolve(mut self) -> Result<Self, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let valid_name = |n: &str| {
            !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        let mut names = std::collections::BTreeSet::new();
        for ch in &mut self.channels {
            if !valid_name(&ch.name) || !names.insert(ch.name.clone()) {
                return bad(format!("channel name {:?} is empty, not [A-Za-z0-9_-], or used twice", ch.name));
            }
            match ch.kind {
                ChannelKind::Webhook | ChannelKind::Fhir if ch.url.is_none() => {
                    return bad(format!("channel {}: {} needs `url`", ch.name, ch.kind.as_str()));
                }
                ChannelKind::Hl7 if ch.address.is_none() => {
                    return bad(format!("channel {}: hl7 needs `address` (host:port)", ch.name));
                }
                _ => {}
            }
            if let Some(path) = &ch.secret_file {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::Invalid(format!("channel {}: secret_file {}: {e}", ch.name, path.display()))
                })?;
                ch.secret = Some(text.trim_end_matches(['\r', '\n']).to_owned());
            }
            if ch.kind == ChannelKind::Webhook && ch.secret.as_deref().is_none_or(str::is_empty) {
                return bad(format!("channel {}: a webhook needs `secret` or `secret_file` (the HMAC key)", ch.name));
            }
        }
        let mut rules = std::collections::BTreeSet::new();
        for rule in &self.rules {
            if !valid_name(&rule.name) || !rules.insert(rule.name.clone()) {
                return bad(format!("rule name {:?} is empty, not [A-Za-z0-9_-], or used twice", rule.name));
            }
            if rule.channels.is_empty() {
                return bad(format!("rule {} names no channel", rule.name));
            }
            if let Some(missing) = rule.channels.iter().find(|c| !names.contains(*c)) {
                return bad(format!("rule {} names channel {missing:?}, which is not configured", rule.name));
            }
            let blank = |v: &str| v.trim().is_empty();
            if rule.classification.as_deref().is_some_and(blank)
                || rule.class_in.iter().any(|v| blank(v))
                || rule.models.iter().any(|v| blank(v))
            {
                return bad(format!("rule {}: an empty `classification`, `class_in` or `models` entry", rule.name));
            }
        }
        if self.max_attempts < 1 {
            return bad("max_attempts must be at least 1".into());
        }
        Ok(self)
    }

    /// Checks the rules' vocabulary criteria against the active packages (`packages`: name and
    /// classifications), so that a misspelt name is a refusal at start, not a rule that never
    /// sends: every `models` entry is an active package; `classification` is a classification of
    /// one of the rule's packages (`models`, or every active one); every `class_in` value is a
    /// class of it (or of any of their classifications without `classification`); `abnormal`
    /// needs a class marked abnormal there.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the rule, what it names and what there is.
    pub fn check_vocabulary(&self, packages: &[Vocabulary<'_>]) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let active: Vec<&str> = packages.iter().map(|p| p.0).collect();
        for rule in &self.rules {
            if let Some(missing) = rule.models.iter().find(|m| !active.contains(&m.as_str())) {
                return bad(format!(
                    "rule {} names model {missing:?}, which is not an active model here (active: {})",
                    rule.name,
                    active.join(", ")
                ));
            }
            let theirs = packages.iter().filter(|p| rule.models.is_empty() || rule.models.iter().any(|m| m == p.0));
            let classifications: Vec<&ClassificationSpec> = theirs.flat_map(|p| p.1.iter()).collect();
            let keys: Vec<&str> = classifications.iter().map(|c| c.key.as_str()).collect();
            let keys = if keys.is_empty() { "none".to_owned() } else { keys.join(", ") };
            let scoped: Vec<&&ClassificationSpec> =
                classifications.iter().filter(|c| rule.classification.as_deref().is_none_or(|k| k == c.key)).collect();
            if let Some(key) = &rule.classification {
                if scoped.is_empty() {
                    return bad(format!(
                        "rule {}: no active package{} classifies {key:?} (their classifications: {keys})",
                        rule.name,
                        if rule.models.is_empty() { String::new() } else { format!(" of {}", rule.models.join(", ")) }
                    ));
                }
            }
            let classes: Vec<&str> = scoped.iter().flat_map(|c| c.bands.iter().map(|b| b.value.as_str())).collect();
            let subject =
                rule.classification.as_deref().map_or_else(|| "the active packages".to_owned(), |k| format!("{k:?}"));
            if let Some(unknown) = rule.class_in.iter().find(|v| !classes.contains(&v.as_str())) {
                return bad(format!(
                    "rule {}: class_in names {unknown:?}, which is no class of {} (classes: {})",
                    rule.name,
                    subject,
                    if classes.is_empty() { "none".to_owned() } else { classes.join(", ") }
                ));
            }
            if rule.abnormal && !scoped.iter().any(|c| c.bands.iter().any(|b| b.abnormal)) {
                return bad(format!(
                    "rule {}: abnormal = true, but no class of {} is marked abnormal",
                    rule.name, subject
                ));
            }
        }
        Ok(())
    }

    /// The channel called `name`.
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NotifyConfig, ConfigError> {
        toml::from_str::<NotifyConfig>(text).map_err(|e| ConfigError::Invalid(e.to_string()))?.resolve()
    }

    const CHANNELS: &str = r#"
        [[channels]]
        name = "ward"
        kind = "webhook"
        url = "https://ward.example/hook"
        secret = "k"
        [[channels]]
        name = "ris"
        kind = "hl7"
        address = "ris.example:2575"
        timeout = "3s"
    "#;

    #[test]
    fn a_full_configuration_resolves() {
        let c = parse(&format!(
            "{CHANNELS}\n[[rules]]\nname = \"critical\"\nchannels = [\"ward\", \"ris\"]\nextent_class_at_least = \"extensive\"\nrefused = true"
        ))
        .expect("valid");
        assert_eq!(c.rules[0].extent_class_at_least, Some(ExtentClass::Extensive));
        assert_eq!(c.channel("ris").map(|c| c.timeout), Some(Duration::from_secs(3)));
        assert_eq!(c.channel("ris").map(|c| c.receiving_application.as_str()), Some("RIS"));
    }

    fn emphysema() -> ClassificationSpec {
        let band = |below: Option<f64>, value: &str, abnormal| firstread_findings::measures::Band {
            below,
            value: value.into(),
            label: value.into(),
            code: firstread_findings::measures::CodeSpec {
                scheme: "99FIRSTREAD".into(),
                value: value.into(),
                meaning: value.into(),
            },
            abnormal,
        };
        ClassificationSpec {
            key: "emphysema".into(),
            label: "Emphysema".into(),
            measurement: "laa_950".into(),
            region: "both_lungs".into(),
            absolute_error: 1.0,
            code: firstread_findings::measures::CodeSpec {
                scheme: "99FIRSTREAD".into(),
                value: "EMPH".into(),
                meaning: "Emphysema".into(),
            },
            source: None,
            bands: vec![band(Some(5.0), "none", false), band(None, "emphysema", true)],
        }
    }

    #[test]
    fn vocabulary_criteria_name_what_the_active_packages_classify() {
        let rules = |extra: &str| {
            parse(&format!("{CHANNELS}\n[[rules]]\nname = \"r\"\nchannels = [\"ward\"]\n{extra}")).expect("valid")
        };
        let spec = [emphysema()];
        let packages: [Vocabulary<'_>; 2] = [("covid19-lung-ct", &[]), ("emphysema-ct", &spec)];
        let check = |extra: &str| rules(extra).check_vocabulary(&packages).map_err(|e| e.to_string());
        let r = rules(
            "models = [\"emphysema-ct\"]\nclassification = \"emphysema\"\nclass_in = [\"emphysema\"]\nabnormal = true",
        );
        assert_eq!(r.rules[0].class_in, ["emphysema"]);
        assert!(r.rules[0].abnormal);
        assert_eq!(check("classification = \"emphysema\"\nclass_in = [\"none\"]"), Ok(()));
        assert_eq!(check("abnormal = true"), Ok(()));
        assert_eq!(check("extent_class_at_least = \"severe\""), Ok(()), "COVID criteria are not vocabulary");
        let e = check("classification = \"emphysem\"").expect_err("misspelt");
        assert!(e.contains("\"emphysem\"") && e.contains("emphysema"), "{e}");
        let e = check("class_in = [\"severe\"]").expect_err("no such class");
        assert!(e.contains("\"severe\"") && e.contains("none, emphysema"), "{e}");
        let e = check("models = [\"emphysema\"]").expect_err("no such model");
        assert!(e.contains("covid19-lung-ct, emphysema-ct"), "{e}");
        let e = check("models = [\"covid19-lung-ct\"]\nabnormal = true").expect_err("COVID has no classes");
        assert!(e.contains("abnormal"), "{e}");
        let e = check("models = [\"covid19-lung-ct\"]\nclassification = \"emphysema\"").expect_err("not its");
        assert!(e.contains("of covid19-lung-ct") && e.contains("none"), "{e}");
        let e = parse(&format!("{CHANNELS}\n[[rules]]\nname = \"r\"\nchannels = [\"ward\"]\nclass_in = [\" \"]"))
            .expect_err("blank");
        assert!(e.to_string().contains("class_in"), "{e}");
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| parse(text).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(&format!("{CHANNELS}\n[[rules]]\nname = \"r\"\nchannels = [\"pager\"]")).contains("\"pager\""));
        assert!(err("[[channels]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"http://x\"").contains("secret"));
        assert!(err("[[channels]]\nname = \"h\"\nkind = \"hl7\"").contains("address"));
        assert!(err(&format!("{CHANNELS}\n[[rules]]\nname = \"a/b\"\nchannels = [\"ward\"]")).contains("rule name"));
        assert!(err(
            "[[channels]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"http://x\"\nsecret_file = \"/nonexistent/s\""
        )
        .contains("/nonexistent/s"));
    }
}
