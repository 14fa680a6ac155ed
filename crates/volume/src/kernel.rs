//! Reconstruction kernel heuristics from Convolution Kernel (0018,1210) (PS3.3 C.8.2.1 CT Image).
//!
//! The model is a quantitative-CT pipeline (HU thresholds at -950, -700 and +100). Smooth
//! ("soft tissue", "standard") kernels keep the HU histogram of lung parenchyma narrow; sharp
//! ("lung", "bone") kernels add edge overshoot and noise that move voxels across those
//! thresholds. So among otherwise equal series a soft kernel is preferred, an unknown one next,
//! a sharp one last. Vendor naming (no standard vocabulary exists):
//!
//! - Siemens: a letter or two and a number, optional suffix: `B40f`, `I30f`, `Br40d`, `Hr38`,
//!   `Qr40`. Up to 50 = soft/medium (B10-B50), above 50 = sharp (B60f, B70f lung, B80 bone).
//!   `Bl..` (syngo "lung") is sharp whatever its number.
//! - GE: words. `STANDARD`, `SOFT`, `SMOOTH`, `STND` = soft; `LUNG`, `BONE`, `BONEPLUS`,
//!   `EDGE`, `SHARP`, `DETAIL`, `HIGH` = sharp.
//! - Philips: letters. `A`, `B`, `C`, `UA`, `UB`, `UC`, `CA`, `CB`, `SA`, `SB` = soft; `D`, `E`,
//!   `L`, `YA`..`YF`, `EC` = sharp.
//! - Canon/Toshiba: `FC01`..`FC29` = soft (body/head), `FC30` and above (bone, lung `FC5x`,
//!   HRCT `FC8x`) = sharp.
//!
//! Anything else is [`KernelClass::Unknown`].

/// Coarse class of a reconstruction kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum KernelClass {
    /// Sharp: lung, bone, edge-enhancing (noisier HU). Least preferred.
    Sharp,
    /// Not recognised.
    Unknown,
    /// Soft tissue / standard / smooth. Preferred.
    Soft,
}

impl KernelClass {
    /// Lower-case name used in decision reasons.
    pub fn name(self) -> &'static str {
        match self {
            KernelClass::Sharp => "sharp",
            KernelClass::Unknown => "unknown",
            KernelClass::Soft => "soft",
        }
    }
}

/// Classifies a Convolution Kernel (0018,1210) value; only the first value (before `\`) counts.
pub fn classify_kernel(kernel: Option<&str>) -> KernelClass {
    let Some(kernel) = kernel else { return KernelClass::Unknown };
    let first = kernel.split('\\').next().unwrap_or_default();
    let k = first.trim().to_ascii_uppercase();
    if k.is_empty() {
        return KernelClass::Unknown;
    }
    ge_word(&k).or_else(|| canon(&k)).or_else(|| siemens(&k)).or_else(|| philips(&k)).unwrap_or(KernelClass::Unknown)
}

fn ge_word(k: &str) -> Option<KernelClass> {
    const SHARP: [&str; 7] = ["LUNG", "BONE", "EDGE", "SHARP", "DETAIL", "HIGH", "HRCT"];
    const SOFT: [&str; 5] = ["STANDARD", "STND", "SOFT", "SMOOTH", "BODY"];
    if SHARP.iter().any(|w| k.contains(w)) {
        Some(KernelClass::Sharp)
    } else if SOFT.iter().any(|w| k.contains(w)) {
        Some(KernelClass::Soft)
    } else {
        None
    }
}

/// Canon/Toshiba `FCnn`.
fn canon(k: &str) -> Option<KernelClass> {
    let n: u32 = k.strip_prefix("FC")?.parse().ok()?;
    Some(if n < 30 { KernelClass::Soft } else { KernelClass::Sharp })
}

/// Siemens `B40f`, `Br40d`, `Bl57d`, `I30f`, `Hr38`: 1-2 letters, 2 digits, optional letter.
fn siemens(k: &str) -> Option<KernelClass> {
    let letters: String = k.chars().take_while(char::is_ascii_alphabetic).collect();
    let rest = &k[letters.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let suffix = &rest[digits.len()..];
    let well_formed = (1..=2).contains(&letters.len())
        && digits.len() == 2
        && suffix.len() <= 1
        && suffix.chars().all(|c| c.is_ascii_alphabetic());
    if !well_formed {
        return None;
    }
    let n: u32 = digits.parse().ok()?;
    if letters == "BL" || n > 50 {
        Some(KernelClass::Sharp)
    } else {
        Some(KernelClass::Soft)
    }
}

fn philips(k: &str) -> Option<KernelClass> {
    match k {
        "A" | "B" | "C" | "UA" | "UB" | "UC" | "CA" | "CB" | "SA" | "SB" => Some(KernelClass::Soft),
        "D" | "E" | "L" | "EC" | "YA" | "YB" | "YC" | "YD" | "YE" | "YF" => Some(KernelClass::Sharp),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_kernels() {
        let c = |k: &str| classify_kernel(Some(k));
        assert_eq!(c("B40f"), KernelClass::Soft);
        assert_eq!(c("B30f"), KernelClass::Soft);
        assert_eq!(c("I50f"), KernelClass::Soft);
        assert_eq!(c("B60f"), KernelClass::Sharp);
        assert_eq!(c("B70f"), KernelClass::Sharp);
        assert_eq!(c("Br40d\\3"), KernelClass::Soft);
        assert_eq!(c("Bl57d"), KernelClass::Sharp);
        assert_eq!(c("Bl40d"), KernelClass::Sharp);
        assert_eq!(c("STANDARD"), KernelClass::Soft);
        assert_eq!(c("SOFT"), KernelClass::Soft);
        assert_eq!(c("LUNG"), KernelClass::Sharp);
        assert_eq!(c("BONEPLUS"), KernelClass::Sharp);
        assert_eq!(c("B"), KernelClass::Soft);
        assert_eq!(c("L"), KernelClass::Sharp);
        assert_eq!(c("YC"), KernelClass::Sharp);
        assert_eq!(c("FC13"), KernelClass::Soft);
        assert_eq!(c("FC52"), KernelClass::Sharp);
        assert_eq!(c(" "), KernelClass::Unknown);
        assert_eq!(c("XYZ123"), KernelClass::Unknown);
        assert_eq!(classify_kernel(None), KernelClass::Unknown);
        assert!(KernelClass::Soft > KernelClass::Unknown && KernelClass::Unknown > KernelClass::Sharp);
    }
}
