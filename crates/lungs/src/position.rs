//! The patient's position and the dependent side the pleural-cavity step ([`crate::cavity`])
//! looks at.
//!
//! The step takes dense tissue between the aerated lung and the ribs along the **posterior**
//! chest wall only: the dependent side of a supine patient, where consolidation, atelectasis and
//! effusion gather. Prone scans (a treatment position in severe ARDS, and a position used to tell
//! dependent atelectasis from disease) and decubitus scans have their dependent side elsewhere,
//! where the step does not look: dense disease there is left to the model, which misses what is
//! as dense as the chest wall. Such a result says so ([`caution`]) instead of reading as a
//! supine one.

/// Patient Position (0018,5100) defined terms of a supine patient (PS3.3 C.7.3.1.1.2): head
/// first, feet first, left first, right first.
pub const SUPINE: [&str; 4] = ["HFS", "FFS", "LFS", "RFS"];

/// The patient's dependent side for a Patient Position (0018,5100) value: `None` for a supine
/// or absent position (the step's assumption), else what a reader is told.
fn dependent_side(position: &str) -> Option<&'static str> {
    match position {
        p if SUPINE.contains(&p) || p.is_empty() => None,
        "HFP" | "FFP" | "LFP" | "RFP" => Some("prone: the dependent side is anterior"),
        "HFDR" | "FFDR" | "AFDR" | "PFDR" => {
            Some("decubitus, right side down: the dependent side is the patient's right")
        }
        "HFDL" | "FFDL" | "AFDL" | "PFDL" => {
            Some("decubitus, left side down: the dependent side is the patient's left")
        }
        _ => Some("not a supine position this method knows"),
    }
}

/// What the reader must be told about a result of the pleural-cavity step for a scan whose
/// Patient Position (0018,5100) is `position` (as sent; padding and case ignored): `None` for a
/// supine patient or no position given (supine is assumed, as nearly all chest CT is), else
/// the caution, naming the position.
pub fn caution(position: Option<&str>) -> Option<String> {
    let position = position?.trim_matches(|c: char| c == ' ' || c == '\0').to_ascii_uppercase();
    let side = dependent_side(&position)?;
    Some(format!(
        "Patient Position {position} ({side}): the method looks for dense dependent lung (consolidation, \
         effusion) only along the posterior chest wall, the dependent side of a supine patient; dense disease on \
         this scan's dependent side may be missed, and involvement, class and score may be under-estimated"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supine_or_absent_says_nothing_prone_and_decubitus_say_where_the_method_did_not_look() {
        for supine in [None, Some(""), Some("HFS"), Some("FFS "), Some("hfs"), Some("LFS\0")] {
            assert_eq!(caution(supine), None, "{supine:?}");
        }
        let prone = caution(Some("HFP")).expect("prone");
        assert!(prone.starts_with("Patient Position HFP (prone: the dependent side is anterior)"), "{prone}");
        assert!(prone.contains("under-estimated"), "{prone}");
        assert!(caution(Some("ffp ")).expect("prone").starts_with("Patient Position FFP (prone"));
        assert!(caution(Some("HFDL")).expect("decubitus").contains("left side down"));
        assert!(caution(Some("FFDR")).expect("decubitus").contains("right side down"));
        // a value the method does not know is not taken for supine
        assert!(caution(Some("SITTING")).expect("unknown").contains("not a supine position this method knows"));
    }
}
