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
//! ```

use std::path::PathBuf;
use std::time::Duration;

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
/// sender is in `senders` when that list is given). A rule without criteria matches every
/// analysed result.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

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
        }
        if self.max_attempts < 1 {
            return bad("max_attempts must be at least 1".into());
        }
        Ok(self)
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
