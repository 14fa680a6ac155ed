//! Association negotiation policy (PS3.8 7.1, 9.3.2-9.3.4): which AE titles, abstract syntaxes
//! and transfer syntaxes the Store SCP accepts, and the A-ASSOCIATE-RJ reasons it gives.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use dicom_dictionary_std::uids;
use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};
use serde::{Deserialize, Serialize};

use crate::storage_classes::STORAGE_SOP_CLASSES;

/// Transfer syntaxes the node accepts: exactly those the volume builder can decode later
/// (dicom-pixeldata with its `openjp2` and `charls` features). Store as received, no transcoding.
/// JPEG Extended 12-bit (.4.51) is left out on purpose: it does not decode.
pub const ACCEPTED_TRANSFER_SYNTAXES: &[(&str, &str)] = &[
    (uids::EXPLICIT_VR_LITTLE_ENDIAN, "Explicit VR Little Endian"),
    (uids::IMPLICIT_VR_LITTLE_ENDIAN, "Implicit VR Little Endian"),
    (uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, "Deflated Explicit VR Little Endian"),
    (uids::JPEG_BASELINE8_BIT, "JPEG Baseline (Process 1)"),
    (uids::JPEG_LOSSLESS, "JPEG Lossless, Non-Hierarchical (Process 14)"),
    (uids::JPEG_LOSSLESS_SV1, "JPEG Lossless, First-Order Prediction (Process 14, SV1)"),
    (uids::JPEGLS_LOSSLESS, "JPEG-LS Lossless"),
    (uids::JPEGLS_NEAR_LOSSLESS, "JPEG-LS Lossy (Near-Lossless)"),
    (uids::JPEG2000_LOSSLESS, "JPEG 2000 (Lossless Only)"),
    (uids::JPEG2000, "JPEG 2000"),
    (uids::RLE_LOSSLESS, "RLE Lossless"),
];

/// Whether `uid` is a standard Storage SOP Class (PS3.4 Annex B).
pub fn is_storage_sop_class(uid: &str) -> bool {
    storage_sop_classes().any(|u| u == uid)
}

/// All standard Storage SOP Classes (PS3.4 Annex B, PS3.6 Annex A), retired ones included:
/// old modalities still send them.
pub fn storage_sop_classes() -> impl Iterator<Item = &'static str> {
    STORAGE_SOP_CLASSES.iter().map(|(uid, _, _)| *uid)
}

/// A calling AE that may associate when the allow-list is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedPeer {
    /// Calling AE title, compared after trimming spaces (case-sensitive, PS3.5 6.2 AE).
    pub ae_title: String,
    /// When set, the association must come from this address.
    #[serde(default)]
    pub host: Option<IpAddr>,
}

/// The AE-title policy of one incoming association (PS3.8 9.3.4 A-ASSOCIATE-RJ reasons).
///
/// - Called AE title must equal ours after trimming spaces: else permanent RJ, reason 7.
/// - With an allow-list, the calling AE title (and its host, when configured) must be listed:
///   else permanent RJ, reason 3.
#[derive(Debug, Clone)]
pub struct AePolicy {
    /// Our AE title.
    pub ae_title: String,
    /// `None`: any calling AE; `Some(list)`: only these.
    pub allowed_peers: Option<Vec<AllowedPeer>>,
    /// The peer's address for this association.
    pub peer_ip: IpAddr,
    /// Where the policy leaves its refusal, for the SCP to report after the A-ASSOCIATE-RJ.
    pub refusal: Arc<Mutex<Option<Refusal>>>,
}

/// Why the AE-title policy refused an association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Calling AE title, trimmed.
    pub calling_ae_title: String,
    /// Called AE title, trimmed.
    pub called_ae_title: String,
    /// The A-ASSOCIATE-RJ reason (PS3.8 9.3.4).
    pub reason: &'static str,
}

impl AePolicy {
    fn refuse(
        &self,
        calling: &str,
        called: &str,
        reason: AssociationRJServiceUserReason,
    ) -> AssociationRJServiceUserReason {
        let text = match reason {
            AssociationRJServiceUserReason::CalledAETitleNotRecognized => "7: called AE title not recognized",
            AssociationRJServiceUserReason::CallingAETitleNotRecognized => "3: calling AE title not recognized",
            _ => "1: no reason given",
        };
        if let Ok(mut cell) = self.refusal.lock() {
            *cell = Some(Refusal {
                calling_ae_title: calling.trim().to_owned(),
                called_ae_title: called.trim().to_owned(),
                reason: text,
            });
        }
        reason
    }
}

impl AccessControl for AePolicy {
    fn check_access(
        &self,
        _this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != self.ae_title.trim() {
            tracing::info!(calling = calling_ae_title, called = called_ae_title, "rejected: called AE title not ours");
            return Err(self.refuse(
                calling_ae_title,
                called_ae_title,
                AssociationRJServiceUserReason::CalledAETitleNotRecognized,
            ));
        }
        if let Some(allowed) = &self.allowed_peers {
            let calling = calling_ae_title.trim();
            let known = allowed
                .iter()
                .any(|p| p.ae_title.trim() == calling && p.host.is_none_or(|h| same_host(h, self.peer_ip)));
            if !known {
                tracing::info!(calling = calling_ae_title, called = called_ae_title, peer = %self.peer_ip,
                    "rejected: calling AE title not on the allow-list");
                return Err(self.refuse(
                    calling_ae_title,
                    called_ae_title,
                    AssociationRJServiceUserReason::CallingAETitleNotRecognized,
                ));
            }
        }
        Ok(())
    }
}

/// Compares addresses, treating IPv4-mapped IPv6 (::ffff:a.b.c.d) as the IPv4 address.
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: Option<Vec<AllowedPeer>>) -> AePolicy {
        AePolicy {
            ae_title: "FIRSTREAD".into(),
            allowed_peers: allowed,
            peer_ip: "127.0.0.1".parse().unwrap(),
            refusal: Arc::default(),
        }
    }

    #[test]
    fn called_ae_title_is_trimmed_and_case_sensitive() {
        let p = policy(None);
        assert!(p.check_access("", "ANY", "FIRSTREAD       ", None).is_ok());
        assert_eq!(
            p.check_access("", "ANY", "firstread", None),
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        );
    }

    #[test]
    fn allow_list_checks_title_and_host() {
        let p = policy(Some(vec![
            AllowedPeer { ae_title: "CT1".into(), host: Some("127.0.0.1".parse().unwrap()) },
            AllowedPeer { ae_title: "PACS".into(), host: Some("10.0.0.9".parse().unwrap()) },
        ]));
        assert!(p.check_access("", "CT1 ", "FIRSTREAD", None).is_ok());
        assert_eq!(
            p.check_access("", "PACS", "FIRSTREAD", None),
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        );
        assert_eq!(
            p.check_access("", "        ", "FIRSTREAD", None),
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        );
    }

    #[test]
    fn storage_classes_include_ct_and_exclude_query_retrieve() {
        assert!(is_storage_sop_class(uids::CT_IMAGE_STORAGE));
        assert!(is_storage_sop_class(uids::ENHANCED_CT_IMAGE_STORAGE));
        assert!(is_storage_sop_class(uids::COMPREHENSIVE3_DSR_STORAGE));
        assert!(is_storage_sop_class(uids::SEGMENTATION_STORAGE));
        assert!(!is_storage_sop_class(uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND));
        assert!(!is_storage_sop_class(uids::STORAGE_COMMITMENT_PUSH_MODEL));
        assert!(!is_storage_sop_class(uids::VERIFICATION));
        assert!(storage_sop_classes().count() > 100);
    }
}
