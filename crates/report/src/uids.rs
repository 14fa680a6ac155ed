//! Deterministic result UIDs: UUID v5 (SHA-1, RFC 4122) of the result identity, written under the
//! 2.25 root (PS3.5 B.2). The same (study, model, model version, study version) always gives the
//! same UIDs, so a retried job sends the same objects and a PACS keeps one copy.

/// The UIDs of one result set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultUids {
    /// SR series and instance.
    pub sr_series: String,
    /// See `sr_series`.
    pub sr_instance: String,
    /// SEG series and instance.
    pub seg_series: String,
    /// See `seg_series`.
    pub seg_instance: String,
    /// SC series; instances via [`ResultUids::sc_instance`].
    pub sc_series: String,
    /// Base of every derived UID.
    identity: String,
}

/// Namespace of firstread result UIDs (a fixed random UUID).
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5f0c_2b1e_7a44_4c3e_9d21_8e6b_41a7_c0de);

impl ResultUids {
    /// The UIDs for (study, model, model version, study version).
    pub fn derive(study_instance_uid: &str, model: &str, model_version: &str, study_version: i32) -> Self {
        let identity = format!("{study_instance_uid}|{model}|{model_version}|{study_version}");
        let uid = |what: &str| derive_uid(&identity, what);
        ResultUids {
            sr_series: uid("sr-series"),
            sr_instance: uid("sr-instance"),
            seg_series: uid("seg-series"),
            seg_instance: uid("seg-instance"),
            sc_series: uid("sc-series"),
            identity,
        }
    }

    /// The SOP Instance UID of the n-th Secondary Capture image.
    pub fn sc_instance(&self, n: usize) -> String {
        derive_uid(&self.identity, &format!("sc-instance-{n}"))
    }

    /// Any other derived UID (e.g. Tracking Unique Identifiers), stable for a `what`.
    pub fn other(&self, what: &str) -> String {
        derive_uid(&self.identity, what)
    }
}

fn derive_uid(identity: &str, what: &str) -> String {
    let u = uuid::Uuid::new_v5(&NAMESPACE, format!("{identity}|{what}").as_bytes());
    format!("2.25.{}", u.as_u128())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_distinct_and_valid() {
        let a = ResultUids::derive("1.2.3", "covid19-lung-ct", "0.1.0", 1);
        let b = ResultUids::derive("1.2.3", "covid19-lung-ct", "0.1.0", 1);
        let c = ResultUids::derive("1.2.3", "covid19-lung-ct", "0.1.0", 2);
        assert_eq!(a, b);
        assert_ne!(a.sr_instance, c.sr_instance);
        let all = [&a.sr_series, &a.sr_instance, &a.seg_series, &a.seg_instance, &a.sc_series];
        for u in all {
            assert!(u.len() <= 64 && u.starts_with("2.25.") && u.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
        }
        assert_ne!(a.sc_instance(0), a.sc_instance(1));
    }
}
