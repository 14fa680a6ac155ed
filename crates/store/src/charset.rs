//! Text in ISO 2022 code extensions (PS3.5 6.1.2.5, Specific Character Set "ISO 2022 IR ..."
//! with several values), which the DICOM library leaves undecoded: its escape sequences and
//! the bytes they announce come through as characters U+0000-U+00FF. [`decode_iso2022`]
//! decodes them: G0 JIS X 0208 (ESC $ B, ESC $ @; ISO 2022 IR 87) and JIS X 0201 Roman
//! (ESC ( J; IR 14) and ASCII (ESC ( B; IR 6); G1 JIS X 0201 katakana (ESC ) I; IR 13), KS X
//! 1001 (ESC $ ) C; IR 149), GB 2312 (ESC $ ) A; IR 58) and ISO 8859-1 (ESC - A; IR 100). Every
//! value starts in ASCII (PS3.5 6.1.2.5.3: each value, and each component group of a person
//! name, begins in the default repertoire), the G1 set of the first Specific Character Set value.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G0 {
    Ascii,
    Jis0208,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G1 {
    Latin1,
    Katakana,
    Korean,
    Chinese,
}

/// Whether a Specific Character Set (0008,0005) value uses ISO 2022 code extensions (then its
/// texts go through [`decode_iso2022`]; others never do).
pub fn is_iso2022(specific_character_set: &str) -> bool {
    specific_character_set.split('\\').any(|v| v.trim().starts_with("ISO 2022"))
}

/// Whether a Specific Character Set (0008,0005) is ISO_IR 148 (Latin alphabet No. 5, ISO
/// 8859-9, Turkish): the DICOM library does not know it and reads its texts as ISO 8859-1, which
/// [`decode_latin5`] corrects.
pub fn is_latin5(specific_character_set: &str) -> bool {
    matches!(specific_character_set.split('\\').next().map(str::trim), Some("ISO_IR 148" | "ISO 2022 IR 148"))
}

/// Whether a text as the DICOM library decoded it may need [`decode`]: it holds an escape sequence
/// (ISO 2022) or one of the six ISO 8859-1 characters ISO 8859-9 replaces.
pub fn may_need_decoding(text: &str) -> bool {
    text.chars().any(|c| c == '\u{1b}' || LATIN5.iter().any(|&(from, _)| from == c))
}

/// Whether [`decode`] changes texts of this Specific Character Set (ISO 2022 code extensions,
/// ISO_IR 148); the DICOM library decodes the others itself.
pub fn decodes(specific_character_set: &str) -> bool {
    is_latin5(specific_character_set) || is_iso2022(specific_character_set)
}

/// The text decoded as the data set's Specific Character Set says, where the DICOM library did
/// not: ISO 2022 code extensions ([`decode_iso2022`]) or ISO_IR 148 ([`decode_latin5`]).
pub fn decode<'a>(specific_character_set: &str, text: &'a str) -> Cow<'a, str> {
    if is_latin5(specific_character_set) {
        decode_latin5(text)
    } else if is_iso2022(specific_character_set) {
        decode_iso2022(text)
    } else {
        Cow::Borrowed(text)
    }
}

/// The six code points where ISO 8859-9 differs from ISO 8859-1 (the bytes 0xD0, 0xDD, 0xDE,
/// 0xF0, 0xFD, 0xFE): Ğ İ Ş ğ ı ş in place of Ð Ý Þ ð ý þ.
const LATIN5: [(char, char); 6] = [('Ð', 'Ğ'), ('Ý', 'İ'), ('Þ', 'Ş'), ('ð', 'ğ'), ('ý', 'ı'), ('þ', 'ş')];

/// A text of an ISO_IR 148 data set that the DICOM library read as ISO 8859-1, as ISO 8859-9.
pub fn decode_latin5(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| LATIN5.iter().any(|&(from, _)| from == c)) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().map(|c| LATIN5.iter().find(|&&(from, _)| from == c).map_or(c, |&(_, to)| to)).collect())
}

/// The text with ISO 2022 code extensions decoded; `text` unchanged when it holds no escape
/// sequence. Characters above U+00FF were decoded already (e.g. single-byte katakana) and are
/// kept as they are. For texts of a data set whose Specific Character Set [`is_iso2022`].
pub fn decode_iso2022(text: &str) -> Cow<'_, str> {
    if !text.contains('\u{1b}') {
        return Cow::Borrowed(text);
    }
    let chars: Vec<char> = text.chars().collect();
    // code points up to U+00FF are the raw bytes; the others are kept (as 0 here, never matched)
    let bytes: Vec<u8> = chars.iter().map(|c| u8::try_from(u32::from(*c)).unwrap_or(0)).collect();
    let mut out = String::with_capacity(text.len());
    let (mut g0, mut g1) = (G0::Ascii, G1::Latin1);
    let mut i = 0;
    while i < bytes.len() {
        if u32::from(chars[i]) > 0xFF {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let b = bytes[i];
        if b == 0x1b {
            let rest = &bytes[i + 1..];
            let (len, change) = match rest {
                [b'$', b'B', ..] | [b'$', b'@', ..] => (3, Some((Some(G0::Jis0208), None))),
                [b'(', b'B', ..] | [b'(', b'J', ..] => (3, Some((Some(G0::Ascii), None))),
                [b')', b'I', ..] => (3, Some((None, Some(G1::Katakana)))),
                [b'$', b')', b'C', ..] => (4, Some((None, Some(G1::Korean)))),
                [b'$', b')', b'A', ..] => (4, Some((None, Some(G1::Chinese)))),
                [b'-', b'A', ..] => (3, Some((None, Some(G1::Latin1)))),
                _ => (1, None),
            };
            match change {
                Some((new_g0, new_g1)) => {
                    g0 = new_g0.unwrap_or(g0);
                    g1 = new_g1.unwrap_or(g1);
                }
                None => out.push('\u{1b}'),
            }
            i += len;
            continue;
        }
        // control characters return to the default repertoire (PS3.5 6.1.2.5.3); the
        // delimiters ^ = \ only ever follow an escape back to ASCII, while in JIS X 0208 their
        // bytes are halves of characters (0x3D starts 女, 所, 書...)
        if matches!(b, b'\r' | b'\n' | b'\t' | 0x0c) {
            g0 = G0::Ascii;
        }
        if b < 0x80 {
            if g0 == G0::Jis0208 && b > 0x20 && i + 1 < bytes.len() && bytes[i + 1] > 0x20 && bytes[i + 1] < 0x80 {
                // a JIS X 0208 pair: as EUC-JP, with both bytes' high bits set
                let pair = [b | 0x80, bytes[i + 1] | 0x80];
                out.push_str(&encoding_rs::EUC_JP.decode_without_bom_handling(&pair).0);
                i += 2;
            } else {
                out.push(char::from(b));
                i += 1;
            }
            continue;
        }
        match g1 {
            G1::Latin1 => {
                out.push(char::from(b));
                i += 1;
            }
            G1::Katakana => {
                // JIS X 0201 katakana 0xA1-0xDF: the half-width forms U+FF61-U+FF9F
                out.push(if (0xA1..=0xDF).contains(&b) {
                    char::from_u32(0xFF61 + u32::from(b - 0xA1)).unwrap_or('\u{fffd}')
                } else {
                    '\u{fffd}'
                });
                i += 1;
            }
            G1::Korean | G1::Chinese => {
                let end = (i + 2).min(bytes.len());
                let decoder = if g1 == G1::Korean { encoding_rs::EUC_KR } else { encoding_rs::GBK };
                out.push_str(&decoder.decode_without_bom_handling(&bytes[i..end]).0);
                i = end;
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // the texts as the DICOM library gives them for pydicom's charset files (bytes as chars)
    #[test]
    fn japanese_korean_and_katakana_as_pydicom_decodes_them() {
        let h31 =
            "Yamada^Tarou=\u{1b}$B;3ED\u{1b}(B^\u{1b}$BB@O:\u{1b}(B=\u{1b}$B$d$^$@\u{1b}(B^\u{1b}$B$?$m$&\u{1b}(B";
        assert_eq!(decode_iso2022(h31), "Yamada^Tarou=山田^太郎=やまだ^たろう");
        let h32 =
            "\u{1b})I\u{d4}\u{cf}\u{c0}\u{de}^\u{1b})I\u{c0}\u{db}\u{b3}=\u{1b}$B;3ED\u{1b}(J^\u{1b}$BB@O:\u{1b}(J";
        assert_eq!(decode_iso2022(h32), "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎");
        // the katakana decoded already, the rest not (what the library gives for chrH32.dcm)
        let mixed = "ﾔﾏﾀﾞ^ﾀﾛｳ=\u{1b}$B;3ED\u{1b}(J^\u{1b}$BB@O:\u{1b}(J=\u{1b}$B$d$^$@\u{1b}(J^\u{1b}$B$?$m$&\u{1b}(J";
        assert_eq!(decode_iso2022(mixed), "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう");
        let korean = "\u{1b}$)C\u{b1}\u{e8}\u{c8}\u{f1}\u{c1}\u{df}";
        assert_eq!(decode_iso2022(korean), "김희중");
        // nothing to do: plain, or decoded already
        // kanji whose first byte is 0x3D ('=') stay whole: 女 is "=w" in JIS X 0208
        assert_eq!(decode_iso2022("\u{1b}$B=w\u{1b}(B^\u{1b}$B=j\u{1b}(B"), "女^所");
        assert!(is_iso2022("\\ISO 2022 IR 87") && is_iso2022("ISO 2022 IR 6\\ISO 2022 IR 87"));
        assert!(!is_iso2022("ISO_IR 192") && !is_iso2022("ISO_IR 100"));
        assert!(is_latin5("ISO_IR 148") && !is_latin5("ISO_IR 100") && !is_latin5("ISO 2022 IR 6\\ISO 2022 IR 87"));
    }

    #[test]
    fn latin5_is_latin1_but_six_letters() {
        // "Gül Şahin" in ISO 8859-9 bytes, as an ISO 8859-1 reader sees them (Þ for Ş)
        let as_latin1: String =
            [0x47u8, 0xFC, 0x6C, 0x5E, 0xDE, 0x61, 0x68, 0x69, 0x6E].iter().map(|&b| char::from(b)).collect();
        assert_eq!(decode("ISO_IR 148", &as_latin1), "Gül^Şahin");
        assert_eq!(decode("ISO_IR 100", &as_latin1), as_latin1, "other character sets are left alone");
        assert_eq!(decode_latin5("ğ ı İ ş Ğ"), "ğ ı İ ş Ğ", "already decoded text is kept");
        assert_eq!(decode_latin5("Ðý"), "Ğı");
        assert!(may_need_decoding(&as_latin1) && !may_need_decoding("Gül"));
        assert!(matches!(decode_iso2022("Doe^Jane"), Cow::Borrowed(_)));
        assert!(matches!(decode_iso2022("王^小東"), Cow::Borrowed(_)));
        assert_eq!(decode_iso2022("Buc^J\u{e9}r\u{f4}me"), "Buc^Jérôme");
    }
}
