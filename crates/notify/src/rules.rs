//! Which results a rule sends ([`Rule::matches`]), and the job destination that names one
//! delivery (`<rule>/<channel>`), unique per study version in the queue.

use crate::config::Rule;
use crate::event::{Event, EventKind};

impl Rule {
    /// Whether `event` is for this rule: the sender, its site and the model are listed (or no
    /// list), and any criterion given holds (the class criterion on the highest class the
    /// result allows: "none or minimal, possibly moderate" is at least moderate; the vocabulary
    /// criteria on every class the result states, the possible ones included); a rule without
    /// criteria takes every first read (not refusals).
    pub fn matches(&self, event: &Event) -> bool {
        if !self.senders.is_empty() && !self.senders.iter().any(|s| s.trim() == event.study.sender.trim()) {
            return false;
        }
        if !self.sites.is_empty() && !self.sites.iter().any(|s| s.trim() == event.study.site) {
            return false;
        }
        if !self.models.is_empty() && !self.models.iter().any(|m| m.trim() == event.model.name) {
            return false;
        }
        if event.kind == EventKind::Refused {
            return self.refused;
        }
        let by_class = self.extent_class_at_least.zip(event.highest_extent()).map(|(min, class)| class >= min);
        let by_score = self.severity_score_at_least.zip(event.severity_score).map(|(min, s)| s >= min);
        let by_pct = self.involvement_pct_at_least.zip(event.involvement_pct).map(|(min, p)| p >= min);
        // the classifications the vocabulary criteria look at
        let scoped: Vec<_> = event
            .classifications
            .iter()
            .filter(|c| self.classification.as_deref().is_none_or(|k| k == c.key))
            .collect();
        let by_class_in = (!self.class_in.is_empty())
            .then(|| scoped.iter().any(|c| c.stated().any(|v| self.class_in.iter().any(|w| w == v))));
        let by_abnormal = self.abnormal.then(|| scoped.iter().any(|c| c.abnormal));
        let by_classification = (self.classification.is_some() && self.class_in.is_empty() && !self.abnormal)
            .then(|| scoped.iter().any(|c| c.class.is_some()));
        let criteria = [by_class, by_score, by_pct, by_class_in, by_abnormal, by_classification];
        let no_criteria = self.extent_class_at_least.is_none()
            && self.severity_score_at_least.is_none()
            && self.involvement_pct_at_least.is_none()
            && self.classification.is_none()
            && self.class_in.is_empty()
            && !self.abnormal;
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
    use crate::event::{Classified, Model, Outcome, Study};
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

    /// A read of a package described by its vocabulary, classed `class`, possibly `possible`.
    fn measured(model: &str, class: &str, possible: &[&str], abnormal: bool) -> Event {
        let mut e = Event::new(
            "r",
            Study::default(),
            Model { name: model.into(), version: "0.1.0".into() },
            Outcome::Refused("x"),
            Default::default(),
            Default::default(),
        );
        e.kind = EventKind::FirstRead;
        e.refusal_reason = None;
        e.classifications = vec![Classified {
            key: "emphysema".into(),
            label: "Emphysema".into(),
            class: Some(class.into()),
            class_label: Some(class.into()),
            possible: possible.iter().map(|p| (*p).to_owned()).collect(),
            abnormal,
        }];
        e
    }

    #[test]
    fn vocabulary_classes_match_by_class_abnormal_flag_and_model() {
        let none = measured("emphysema-ct", "none", &[], false);
        let emphysema = measured("emphysema-ct", "emphysema", &[], true);
        let unsure = measured("emphysema-ct", "none", &["emphysema"], true);
        let covid = event("CT", 30.0, 8);
        let abnormal = rule("name = 'x'\nchannels = ['c']\nabnormal = true");
        assert!(!abnormal.matches(&none), "no emphysema is not abnormal");
        assert!(abnormal.matches(&emphysema));
        assert!(abnormal.matches(&unsure), "possibly emphysema is flagged");
        assert!(!abnormal.matches(&covid), "a COVID-19 read has no vocabulary class");
        let class_in = rule("name = 'x'\nchannels = ['c']\nclassification = 'emphysema'\nclass_in = ['emphysema']");
        assert!(class_in.matches(&emphysema) && class_in.matches(&unsure) && !class_in.matches(&none));
        let normal = rule("name = 'x'\nchannels = ['c']\nclass_in = ['none']");
        assert!(normal.matches(&none) && !normal.matches(&emphysema) && !normal.matches(&covid));
        // another classification's key: its classes are not looked at
        let other = rule("name = 'x'\nchannels = ['c']\nclassification = 'fibrosis'\nabnormal = true");
        assert!(!other.matches(&emphysema));
        // the classification alone: every read that classified it
        let any = rule("name = 'x'\nchannels = ['c']\nclassification = 'emphysema'");
        assert!(any.matches(&none) && any.matches(&emphysema) && !any.matches(&covid));
        // criteria of both kinds: either
        let either = rule("name = 'x'\nchannels = ['c']\nextent_class_at_least = 'extensive'\nabnormal = true");
        assert!(either.matches(&covid) && either.matches(&emphysema) && !either.matches(&none));
        // models: only that package's results, refusals included
        let only = rule("name = 'x'\nchannels = ['c']\nmodels = ['emphysema-ct']\nrefused = true");
        assert!(!only.matches(&none), "refused only");
        let mut refused = measured("emphysema-ct", "none", &[], false);
        refused.kind = EventKind::Refused;
        assert!(only.matches(&refused));
        refused.model.name = "covid19-lung-ct".into();
        assert!(!only.matches(&refused), "another model's refusal");
        let every_emphysema_read = rule("name = 'x'\nchannels = ['c']\nmodels = ['emphysema-ct']");
        assert!(every_emphysema_read.matches(&none) && !every_emphysema_read.matches(&covid));
    }

    #[test]
    fn destinations_round_trip() {
        assert_eq!(parse_destination(&destination("critical", "ris-hl7")), Some(("critical", "ris-hl7")));
    }
}
