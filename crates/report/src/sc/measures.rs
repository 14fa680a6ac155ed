//! The key image of a package described by the measurement vocabulary alone (no findings
//! extension; `models/emphysema-ct` is one), drawn from its manifest like its SR.
//!
//! **Which slice** ([`key_slice`]): the slice holding the most voxels of the package's finding
//! segments, the outputs that are not anatomical structures (Segmented Property Category other
//! than SNOMED CT 123037004 "Anatomical Structure": for emphysema-ct the low attenuation area and
//! the lung opacity); ties go to the most superior slice. Without any such voxel, the middle slice.
//! One image per result set.
//!
//! **The image**: the source slice in the lung window (the vocabulary packages so far are chest
//! packages; a manifest does not name a window yet), each finding segment blended in its manifest
//! colour, each anatomical segment outlined in its colour, orientation letters, and two legend
//! bands: on top the model, version and "NOT FOR DIAGNOSIS", the slice and what it was chosen
//! for, a colour key of every segment (its Segment Label); at the bottom each classification as
//! the SR says it (classes within the method's error as "possibly ..."), then the whole-region
//! value of each measurement over its combined region (over each of its segments when it has
//! none), with the labels and units of the manifest.

use firstread_findings::vocabulary::capitalised;

use super::{wrap, Canvas, Font, WHITE, YELLOW};
use crate::seg::check_shapes;
use crate::sr::measures::region_label;
use crate::{ReportError, ResultInput};

/// Segmented Property Category "Anatomical Structure" (SNOMED CT 123037004, CID 7150): outlined;
/// every other segment is a finding, blended.
const ANATOMICAL_STRUCTURE: &str = "123037004";

/// The key image of `input` (module doc): its canonical slice and interleaved RGB bytes.
///
/// # Errors
/// [`ReportError::Write`] when masks, volume and manifest disagree.
pub(super) fn key_images(input: &ResultInput) -> Result<Vec<(usize, Vec<u8>)>, ReportError> {
    check_shapes(input).map_err(|message| ReportError::Write { what: "SC", message })?;
    let m = input.manifest;
    let v = input.volume;
    let [slices, rows, cols] = v.shape;
    let plane = rows * cols;
    // (segment label, mask, colour, anatomical) of every output the segmentation holds
    let segments: Vec<(&str, &[u8], [u8; 3], bool)> = m
        .outputs
        .iter()
        .filter_map(|o| {
            let mask = input.segmentation.channels.get(o.channel)?;
            let anatomical = o.category_scheme == "SCT" && o.category_value == ANATOMICAL_STRUCTURE;
            Some((o.segment_label.as_str(), mask.as_slice(), o.recommended_display_rgb, anatomical))
        })
        .collect();
    let findings: Vec<&[u8]> = segments.iter().filter(|s| !s.3).map(|s| s.1).collect();
    let (k, found) = key_slice(&findings, slices, plane);
    let base = k * plane;
    let overlays: Vec<(&[u8], [u8; 3])> =
        segments.iter().filter(|s| !s.3).map(|s| (&s.1[base..base + plane], s.2)).collect();
    let mut img = Canvas::windowed(v, k, &overlays);
    for s in segments.iter().filter(|s| s.3) {
        img.contour(v, &s.1[base..base + plane], s.2);
    }
    let font = Font::for_columns(cols);
    let max_chars = font.chars_per_line(cols);
    let finding_labels: Vec<String> = segments.iter().filter(|s| !s.3).map(|s| uncapitalised(s.0)).collect();
    let why = match found {
        0 => "no finding segment (middle slice)".to_owned(),
        n => format!("most {} ({n} voxels)", finding_labels.join(" + ")),
    };
    let z_mm = v.slices.get(k).map_or(0.0, |s| s.position_mm[2]);
    let top: Vec<(String, [u8; 3])> = [
        (format!("firstread {} {} - NOT FOR DIAGNOSIS", m.name, m.version), YELLOW),
        (format!("Key image: slice {}/{slices} (z {z_mm:.1} mm), {why}", k + 1), WHITE),
    ]
    .into_iter()
    .flat_map(|(t, c)| wrap(&t, max_chars).into_iter().map(move |l| (l, c)))
    .collect();
    let key: Vec<(&str, [u8; 3])> = segments.iter().map(|s| (s.0, s.2)).collect();
    let bottom: Vec<String> = bottom_lines(input).iter().flat_map(|t| wrap(t, max_chars)).collect();
    img.legend(font, &top, &key, &bottom);
    img.orientation_letters(font, v);
    Ok(vec![(k, img.rgb)])
}

/// `text` with its first letter in lower case ("Low attenuation area (-950 HU)" -> "low
/// attenuation area (-950 HU)"): the rest, units included, as written.
fn uncapitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| first.to_lowercase().chain(chars).collect())
}

/// The slice (0 = most inferior) holding the most voxels of `masks` (`[slices, rows, cols]`
/// each, `plane` = rows x cols), ties to the most superior, and that count; the middle slice and
/// 0 when they hold none.
fn key_slice(masks: &[&[u8]], slices: usize, plane: usize) -> (usize, usize) {
    let mut best = (slices / 2, 0);
    for k in 0..slices {
        let count: usize = masks
            .iter()
            .filter_map(|m| m.get(k * plane..(k + 1) * plane))
            .map(|s| s.iter().filter(|&&x| x != 0).count())
            .sum();
        if count > 0 && count >= best.1 {
            best = (k, count);
        }
    }
    best
}

/// The classifications, then the whole-region values of the combined regions (of every segment
/// of a measurement without one).
fn bottom_lines(input: &ResultInput) -> Vec<String> {
    let m = input.manifest;
    let measures = input.measures;
    let mut lines: Vec<String> = measures.classifications.iter().map(|c| capitalised(&c.text())).collect();
    for spec in &m.measurements {
        let shown = |region: &str| match &spec.combined {
            Some(combined) => region == combined,
            None => true,
        };
        lines.extend(
            measures
                .measurements
                .iter()
                .filter(|x| x.key == spec.key && x.zone.is_none() && shown(&x.region))
                .map(|x| x.text(&region_label(m, &x.region))),
        );
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_their_units() {
        assert_eq!(uncapitalised("Low attenuation area (-950 HU)"), "low attenuation area (-950 HU)");
        assert_eq!(uncapitalised(""), "");
    }

    #[test]
    fn the_key_slice_holds_the_most_finding_voxels() {
        // 4 slices of 2 x 2; slice 1 holds 3 voxels of two masks, slice 3 holds 3 of one
        let a = [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0];
        let b = [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(key_slice(&[&a, &b], 4, 4), (3, 3), "ties: the most superior");
        assert_eq!(key_slice(&[&b], 4, 4), (1, 1));
        assert_eq!(key_slice(&[&[0; 16]], 4, 4), (2, 0), "none: the middle slice");
        assert_eq!(key_slice(&[], 4, 4), (2, 0));
    }
}
