//! Which results a rule sends ([`Rule::matches`]), and the job destination that names one
//! delivery (`<rule>/<channel>`), unique per study version in the queue.

use crate::config::Rule;
use crate::event::{Event, EventKind};

impl Rule {
    /// Whether `event` is for this rule: the sender and its site are listed (or no list), and any criterion
    /// given holds (the class criterion on the highest class the result allows: "none or
    /// minimal, possibly moderate" is at least moderate); a rule without criteria takes every
    /// first read (not refusals).
    pub fn matches(&self, event: &Event) -> bool {
        if !self.senders.is_empty() && !self.senders.iter().any(|s| s.trim() == event.study.sender.trim()) {
            return false;
        }
        if !self.sites.is_empty() && !self.sites.iter().any(|s| s.trim() == event.study.site) {
            return false;
        }
        if event.kind == EventKind::Refused {
            return self.refused;
        }
        let by_class = self.extent_class_at_least.zip(event.highest_extent()).map(|(min, class)| class >= min);
        let by_score = self.severity_score_at_least.zip(event.severity_score).map(|(min, s)| s >= min);
        let by_pct = self.involvement_pct_at_least.zip(event.involvement_pct).map(|(min, p)| p >= min);
        let criteria = [by_class, by_score, by_pct];
        let no_criteria = self.extent_class_at_least.is_none()
            && self.severity_score_at_least.is_none()
            && self.involvement_pct_at_least.is_none();
        (no_criteria && !self.refused) || criteria.into_iter().flatten().any(|m| m)
    }
}

/// The queue destination of one delivery: `<rule>/<channel>`.
pub fn destination(rule: &str, channel: &str) -> String {
    format!("{rule}/{channel}")
}

/// The rule and channel of a destination made by [`destination`].
pub fn parse_destination(destination: &str) -> Option<(&str, &str)> {
    destination.split_once('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Model, Outcome, Study};
    use firstread_findings::ExtentClass;

    fn rule(toml_text: &str) -> Rule {
        toml::from_str(toml_text).expect("rule")
    }

    fn event(sender: &str, pct: f64, score: u8) -> Event {
        let study = Study { sender: sender.into(), ..Study::default() };
        let mut e =
            Event::new("r", study, Model::default(), Outcome::Refused("x"), Default::default(), Default::default());
        e.kind = EventKind::FirstRead;
        e.extent_class = Some(firstread_findings::vocabulary::extent_code(ExtentClass::from_pct(pct)).into());
        e.severity_score = Some(score);
        e.involvement_pct = Some(pct);
        e
    }

    #[test]
    fn any_criterion_given_matches() {
        let r = rule("name = 'x'\nchannels = ['c']\nextent_class_at_least = 'extensive'\nseverity_score_at_least = 15");
        assert!(!r.matches(&event("CT", 12.0, 8)), "moderate, 8: neither");
        assert!(r.matches(&event("CT", 30.0, 8)), "extensive by class");
        assert!(r.matches(&event("CT", 12.0, 15)), "by score");
        let mut refused = event("CT", 0.0, 0);
        refused.kind = EventKind::Refused;
        assert!(!r.matches(&refused), "refusals only with refused = true");
        // moderate, possibly extensive (within the method's error): at least extensive
        let mut possibly = event("CT", 23.0, 8);
        possibly.possible_extent_class =
            Some(firstread_findings::vocabulary::extent_code(ExtentClass::Extensive).into());
        assert_eq!(possibly.highest_extent(), Some(ExtentClass::Extensive));
        assert!(r.matches(&possibly), "by the possible class");
    }

    #[test]
    fn senders_and_refusals() {
        let r = rule("name = 'x'\nchannels = ['c']\nsenders = ['CT_A']\nrefused = true");
        let mut refused = event("CT_A", 0.0, 0);
        refused.kind = EventKind::Refused;
        assert!(r.matches(&refused));
        refused.study.sender = "CT_B".into();
        assert!(!r.matches(&refused), "another site");
        assert!(!r.matches(&event("CT_A", 80.0, 30)), "refused-only rule takes no read");
        let every = rule("name = 'all'\nchannels = ['c']");
        assert!(every.matches(&event("ANY", 0.0, 0)));
        let st_anne = rule("name = 'x'\nchannels = ['c']\nsites = ['st-anne']");
        let mut theirs = event("CT_A", 30.0, 10);
        theirs.study.site = "st-anne".into();
        assert!(st_anne.matches(&theirs));
        theirs.study.site = "default".into();
        assert!(!st_anne.matches(&theirs), "another site's study");
    }

    #[test]
    fn destinations_round_trip() {
        assert_eq!(parse_destination(&destination("critical", "ris-hl7")), Some(("critical", "ris-hl7")));
    }
}
