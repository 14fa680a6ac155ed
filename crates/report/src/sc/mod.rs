//! Key images of a first read as Secondary Capture Image Storage (PS3.3 A.8.1), for viewers and
//! PACS without SR or SEG support. This module draws those of the COVID-19 extension (below);
//! `measures.rs` the one of a package described by the measurement vocabulary alone, from its
//! manifest; both share the canvas, the legend bands and the DICOM object.
//!
//! Which slices ([`choose_key_slices`]): the six zones are the findings' own
//! ([`firstread_findings::ZoneFindings::slices`]: the upper, middle and lower thirds of each lung's
//! volume); in each zone holding opacity, the slice with the most opacity
//! voxels inside that lung (ties: the most superior, as `firstread_findings` picks its key
//! slices). Zones that pick the same slice share one image, so there are at most six images, in
//! order from superior to inferior. Without any opacity there is one image, of the middle slice.
//!
//! Each image ([`render_key_image`]) is the source slice as the scanner wrote it (Rows x Columns
//! and orientation of the source image: canonical `(row, col)` mapped through
//! [`firstread_volume::Volume::source_pixel`]) in the lung window (width 1500, level -600 HU,
//! grey), the opacity blended in the manifest's colour for the opacity output (red/orange), the
//! boundary of each lung mask (1 pixel per 256 columns wide) in that lung's manifest colour,
//! orientation letters at the left and right edges, and two legend bands (darkened image,
//! burned-in text): on top `firstread <model> <version> - NOT FOR DIAGNOSIS`, the zones shown with
//! the slice, and a colour key; at the bottom, for each zone, its involvement and score and this
//! slice's opacity % (opacity voxels / that lung's voxels on the slice), then the total involvement,
//! the severity score x/30, the SFR extent class, the pleural effusions (or "No pleural effusion"
//! when the pleural cavity was assessed and holds none), the dense dependent regions and up to
//! three focal opacities (their display texts from `firstread_findings::vocabulary`), and the
//! RSNA pattern suggestion. When the segmentation has pleural effusion channels, the effusion is
//! blended in its manifest colour like the opacity, with its own colour key entry. Text is
//! Noto Sans Mono (pre-rasterised, `noto-sans-mono-bitmap`), 16 px rows up to 700 columns, 24 px
//! up to 1400, 32 px above.
//!
//! Modules (PS3.3 A.8.1.3): Patient, General Study (copied from the source), General Series
//! (Modality `OT`, so that a node receiving its own results back never takes them for CT; its own
//! series [`crate::ResultUids::sc_series`], Series Number [`SC_SERIES_NUMBER`], "firstread key
//! images"), General Equipment, SC Equipment (Conversion Type `WSD`), General Image (Image Type
//! `DERIVED\SECONDARY`, Patient Orientation of the source, Source Image Sequence to the original
//! slice, Burned In Annotation `YES`, Lossy Image Compression `00`), Image Pixel (RGB, Samples per
//! Pixel 3, Planar Configuration 0 (interleaved), 8 bits, even length), SC Image, SOP Common (SOP
//! Class 1.2.840.10008.5.1.4.1.1.7, Specific Character Set ISO_IR 192). Uncompressed Explicit VR
//! Little Endian; image `n` (0-based) has SOP Instance UID [`crate::ResultUids::sc_instance`]`(n)`
//! and Instance Number `n + 1`. Dates and times come from the input: same input, same bytes.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileDicomObject, InMemDicomObject};
use firstread_findings::vocabulary::{self, capitalised};
use firstread_findings::{Level, Side};
use noto_sans_mono_bitmap::{get_raster, get_raster_width, FontWeight, RasterHeight};

use crate::dataset::{new_instance, put_str, put_strs, put_u16, seq, SeriesHeader};
use crate::seg::{
    check_shapes, format_ds, software_versions, source_image_item, source_orientation, EXPLICIT_VR_LITTLE_ENDIAN,
    MANUFACTURER,
};
use crate::{ReportError, ResultInput};

mod measures;

/// Secondary Capture Image Storage SOP Class UID (PS3.4 B.5).
pub const SC_SOP_CLASS_UID: &str = "1.2.840.10008.5.1.4.1.1.7";
/// Series Number (0020,0011) of the key image series.
pub const SC_SERIES_NUMBER: i32 = 9003;
/// Lung window (level, width) in HU.
pub const LUNG_WINDOW: (f64, f64) = (-600.0, 1500.0);
/// Most key images per result set (one per zone).
pub const MAX_KEY_IMAGES: usize = 6;
/// Opacity of the opacity overlay (0-1).
const OVERLAY_ALPHA: f64 = 0.5;
/// Share of the image brightness kept under the legend bands.
const BAND_DIM: f64 = 0.2;

/// One zone shown on a key image, with its counts on that slice.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneOnSlice {
    /// The lung.
    pub side: Side,
    /// The third of that lung.
    pub level: Level,
    /// Voxels of that lung on the slice.
    pub lung_voxels: usize,
    /// Opacity voxels inside that lung on the slice.
    pub opacity_voxels: usize,
}

impl ZoneOnSlice {
    /// Opacity share of that lung on this slice (%).
    pub fn slice_opacity_pct(&self) -> f64 {
        if self.lung_voxels == 0 {
            0.0
        } else {
            100.0 * self.opacity_voxels as f64 / self.lung_voxels as f64
        }
    }
}

/// A key image to render: a canonical slice and the zones it stands for (empty: no opacity
/// anywhere, the middle slice).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyImage {
    /// Canonical slice index (0 = most inferior).
    pub slice: usize,
    /// Zones whose slice of largest opacity this is.
    pub zones: Vec<ZoneOnSlice>,
}

/// Builds the key images of `input` (see the module doc): 1 to [`MAX_KEY_IMAGES`] Secondary
/// Capture objects, superior first.
///
/// # Errors
/// [`ReportError::Write`] when masks, volume and manifest disagree, the manifest lacks the
/// `left_lung`, `right_lung` or `lung_opacity` output, or the image is larger than DICOM allows.
pub fn build_key_images(input: &ResultInput) -> Result<Vec<FileDicomObject<InMemDicomObject>>, ReportError> {
    let err = |message: String| ReportError::Write { what: "SC", message };
    let m = input.manifest;
    // (canonical slice, RGB pixels) per image
    let (images, derivation, description) = match input.findings {
        Some(_) => {
            let keys = choose_key_slices(input)?;
            let images = keys
                .iter()
                .enumerate()
                .map(|(n, key)| Ok((key.slice, render_key_image(input, key, n, keys.len())?)))
                .collect::<Result<Vec<_>, ReportError>>()?;
            let derivation = format!("with lung contours and opacity overlay of {} {}", m.name, m.version);
            (images, derivation, "firstread key images".to_owned())
        }
        // a package described by the vocabulary alone
        // (its series named after it, as its SR series are)
        None => (
            measures::key_images(input)?,
            format!("with the segments of {} {} (contours and overlays)", m.name, m.version),
            format!("{} {} key images", m.name, m.version),
        ),
    };
    let [_, rows, cols] = input.volume.shape;
    let rows16 = u16::try_from(rows).map_err(|_| err(format!("{rows} rows")))?;
    let cols16 = u16::try_from(cols).map_err(|_| err(format!("{cols} columns")))?;
    let (row_dir, col_dir) = source_orientation(input.volume);
    let patient_orientation = [direction_letters(row_dir), direction_letters(col_dir)];
    let (date, time) = (input.content_date.as_str(), input.content_time.as_str());
    let mut out = Vec::with_capacity(images.len());
    for (n, (slice_index, mut pixels)) in images.into_iter().enumerate() {
        if pixels.len() % 2 == 1 {
            pixels.push(0);
        }
        let slice = input
            .volume
            .slices
            .get(slice_index)
            .ok_or_else(|| err(format!("slice {slice_index} outside the volume")))?;
        // Patient, General Study, SOP Common, General Series.
        let mut obj = new_instance(
            input,
            &SeriesHeader {
                sop_class_uid: SC_SOP_CLASS_UID,
                sop_instance_uid: &input.uids.sc_instance(n),
                modality: "OT",
                series_instance_uid: &input.uids.sc_series,
                series_number: SC_SERIES_NUMBER,
                series_description: &description,
            },
        );
        put_str(&mut obj, tags::BODY_PART_EXAMINED, VR::CS, "CHEST");
        // General Equipment, SC Equipment.
        put_str(&mut obj, tags::MANUFACTURER, VR::LO, MANUFACTURER);
        put_strs(&mut obj, tags::SOFTWARE_VERSIONS, VR::LO, &software_versions(input));
        put_str(&mut obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
        put_str(&mut obj, tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER, VR::LO, MANUFACTURER);
        put_str(&mut obj, tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER_MODEL_NAME, VR::LO, "firstread");
        put_strs(&mut obj, tags::SECONDARY_CAPTURE_DEVICE_SOFTWARE_VERSIONS, VR::LO, &software_versions(input));
        // General Image, SC Image.
        put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, &(n + 1).to_string());
        put_strs(&mut obj, tags::PATIENT_ORIENTATION, VR::CS, &patient_orientation);
        put_str(&mut obj, tags::CONTENT_DATE, VR::DA, date);
        put_str(&mut obj, tags::CONTENT_TIME, VR::TM, time);
        put_strs(&mut obj, tags::IMAGE_TYPE, VR::CS, &["DERIVED", "SECONDARY"]);
        put_str(
            &mut obj,
            tags::DERIVATION_DESCRIPTION,
            VR::ST,
            &format!("Lung window (W {} L {}) {derivation}; annotations burned in", LUNG_WINDOW.1, LUNG_WINDOW.0),
        );
        obj.put(seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source_image_item(slice)]));
        put_str(&mut obj, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
        put_str(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        put_str(&mut obj, tags::DATE_OF_SECONDARY_CAPTURE, VR::DA, date);
        put_str(&mut obj, tags::TIME_OF_SECONDARY_CAPTURE, VR::TM, time);
        let v = input.volume;
        put_strs(&mut obj, tags::PIXEL_SPACING, VR::DS, &[format_ds(v.spacing_mm[1]), format_ds(v.spacing_mm[2])]);
        // Image Pixel.
        put_u16(&mut obj, tags::SAMPLES_PER_PIXEL, &[3]);
        put_str(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
        put_u16(&mut obj, tags::PLANAR_CONFIGURATION, &[0]);
        put_u16(&mut obj, tags::ROWS, &[rows16]);
        put_u16(&mut obj, tags::COLUMNS, &[cols16]);
        put_u16(&mut obj, tags::BITS_ALLOCATED, &[8]);
        put_u16(&mut obj, tags::BITS_STORED, &[8]);
        put_u16(&mut obj, tags::HIGH_BIT, &[7]);
        put_u16(&mut obj, tags::PIXEL_REPRESENTATION, &[0]);
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(pixels.into())));
        out.push(
            obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(EXPLICIT_VR_LITTLE_ENDIAN))
                .map_err(|e| err(e.to_string()))?,
        );
    }
    Ok(out)
}

/// The masks of the roles the key images use.
struct RoleMasks<'a> {
    left: &'a [u8],
    right: &'a [u8],
    opacity: &'a [u8],
    left_rgb: [u8; 3],
    right_rgb: [u8; 3],
    opacity_rgb: [u8; 3],
    /// The pleural effusion masks the segmentation has (none without the pleural-cavity step).
    effusions: Vec<(Side, &'a [u8], [u8; 3])>,
}

fn role_masks<'a>(input: &ResultInput<'a>) -> Result<RoleMasks<'a>, ReportError> {
    let err = |message: String| ReportError::Write { what: "SC", message };
    check_shapes(input).map_err(err)?;
    let m = input.manifest;
    let get = |role: &str| -> Result<(&'a [u8], [u8; 3]), ReportError> {
        let ch = m.channel(role).ok_or_else(|| err(format!("the model has no {role} output")))?;
        let mask = input.segmentation.channels.get(ch).ok_or_else(|| err(format!("no mask for channel {ch}")))?;
        let rgb = m.outputs.get(ch).map_or([255, 255, 255], |o| o.recommended_display_rgb);
        Ok((mask.as_slice(), rgb))
    };
    let (left, left_rgb) = get("left_lung")?;
    let (right, right_rgb) = get("right_lung")?;
    let (opacity, opacity_rgb) = get("lung_opacity")?;
    let effusions = [Side::Right, Side::Left]
        .into_iter()
        .filter_map(|side| m.channel(vocabulary::roles::pleural_effusion(side)).map(|ch| (side, ch)))
        .filter(|&(_, ch)| ch < input.segmentation.channels.len())
        .filter_map(|(side, ch)| get(&m.outputs[ch].name).ok().map(|(mask, rgb)| (side, mask, rgb)))
        .collect();
    Ok(RoleMasks { left, right, opacity, left_rgb, right_rgb, opacity_rgb, effusions })
}

/// The key slices of `input` (module doc): superior first, at most [`MAX_KEY_IMAGES`], at least
/// one.
///
/// # Errors
/// [`ReportError::Write`] as [`build_key_images`].
pub fn choose_key_slices(input: &ResultInput) -> Result<Vec<KeyImage>, ReportError> {
    let Some(findings) = input.findings else { return Ok(Vec::new()) };
    let masks = role_masks(input)?;
    let [slices, rows, cols] = input.volume.shape;
    let plane = rows * cols;
    let mut keys: Vec<KeyImage> = Vec::new();
    for (side, lung) in [(Side::Left, masks.left), (Side::Right, masks.right)] {
        // (lung, opacity inside the lung) voxels per slice.
        let counts: Vec<(usize, usize)> = (0..slices)
            .map(|k| {
                let range = k * plane..(k + 1) * plane;
                lung[range.clone()]
                    .iter()
                    .zip(&masks.opacity[range])
                    .fold((0, 0), |(l, o), (&a, &b)| (l + usize::from(a != 0), o + usize::from(a != 0 && b != 0)))
            })
            .collect();
        for zone in findings.zones.iter().filter(|z| z.side == side) {
            let (level, Some(range)) = (zone.level, zone.slices.clone()) else { continue };
            let mut best: Option<usize> = None;
            for k in range.filter(|&k| k < slices) {
                if counts[k].1 > 0 && best.is_none_or(|b| counts[k].1 >= counts[b].1) {
                    best = Some(k);
                }
            }
            let Some(k) = best else { continue };
            let zone = ZoneOnSlice { side, level, lung_voxels: counts[k].0, opacity_voxels: counts[k].1 };
            match keys.iter_mut().find(|key| key.slice == k) {
                Some(key) => key.zones.push(zone),
                None => keys.push(KeyImage { slice: k, zones: vec![zone] }),
            }
        }
    }
    if keys.is_empty() {
        keys.push(KeyImage { slice: slices / 2, zones: Vec::new() });
    }
    keys.sort_by_key(|k| std::cmp::Reverse(k.slice));
    keys.truncate(MAX_KEY_IMAGES);
    Ok(keys)
}

/// Renders key image `index` of `count`: interleaved RGB bytes, `Rows x Columns x 3` of the
/// source image, in the source orientation (module doc).
///
/// # Errors
/// [`ReportError::Write`] as [`build_key_images`], or a slice outside the volume.
pub fn render_key_image(
    input: &ResultInput,
    key: &KeyImage,
    index: usize,
    count: usize,
) -> Result<Vec<u8>, ReportError> {
    let masks = role_masks(input)?;
    let v = input.volume;
    let [slices, rows, cols] = v.shape;
    let k = key.slice;
    if k >= slices {
        return Err(ReportError::Write { what: "SC", message: format!("slice {k} outside the volume of {slices}") });
    }
    let plane = rows * cols;
    let base = k * plane;
    let mut overlays: Vec<(&[u8], [u8; 3])> = vec![(&masks.opacity[base..base + plane], masks.opacity_rgb)];
    overlays.extend(masks.effusions.iter().map(|&(_, effusion, rgb)| (&effusion[base..base + plane], rgb)));
    let mut img = Canvas::windowed(v, k, &overlays);
    for (lung, rgb) in [(masks.left, masks.left_rgb), (masks.right, masks.right_rgb)] {
        img.contour(v, &lung[base..base + plane], rgb);
    }
    draw_legend(&mut img, input, key, index, count, &masks);
    Ok(img.rgb)
}

/// An RGB image being drawn.
struct Canvas {
    rgb: Vec<u8>,
    rows: usize,
    cols: usize,
}

impl Canvas {
    /// Canonical slice `k` of `v` in the source image's rows, columns and orientation, in the
    /// lung window, each of `overlays` (a mask of the slice, `[rows, cols]` canonical, and its
    /// colour) blended in order.
    fn windowed(v: &firstread_volume::Volume, k: usize, overlays: &[(&[u8], [u8; 3])]) -> Canvas {
        let [_, rows, cols] = v.shape;
        let plane = rows * cols;
        let mut img = Canvas { rgb: vec![0u8; plane * 3], rows, cols };
        let (level, width) = LUNG_WINDOW;
        let lo = level - width / 2.0;
        let Some(hu) = v.hu.get(k * plane..(k + 1) * plane) else { return img };
        for r in 0..rows {
            for c in 0..cols {
                let j = r * cols + c;
                let g = ((f64::from(hu[j]) - lo) / width * 255.0).round().clamp(0.0, 255.0) as u8;
                let mut px = [g, g, g];
                for (mask, rgb) in overlays {
                    if mask.get(j).is_some_and(|&m| m != 0) {
                        px = blend(px, *rgb, OVERLAY_ALPHA);
                    }
                }
                let (sr, sc) = v.source_pixel(r, c);
                img.set(sr, sc, px);
            }
        }
        img
    }

    /// The contour of `mask` (one canonical slice, `[rows, cols]`) in `rgb`: mask pixels within
    /// 1 pixel per 256 columns (4-neighbour steps) of the outside.
    fn contour(&mut self, v: &firstread_volume::Volume, mask: &[u8], rgb: [u8; 3]) {
        let [_, rows, cols] = v.shape;
        if mask.len() < rows * cols {
            return;
        }
        let thickness = (cols / 256).max(1);
        let inside = |r: usize, c: usize| mask[r * cols + c] != 0;
        for r in 0..rows {
            for c in 0..cols {
                if !inside(r, c) {
                    continue;
                }
                let edge = (1..=thickness).any(|d| {
                    r < d
                        || c < d
                        || r + d >= rows
                        || c + d >= cols
                        || !inside(r - d, c)
                        || !inside(r + d, c)
                        || !inside(r, c - d)
                        || !inside(r, c + d)
                });
                if edge {
                    let (sr, sc) = v.source_pixel(r, c);
                    self.set(sr, sc, rgb);
                }
            }
        }
    }

    /// A colour key from row `row`: a swatch before each name, left to right from `margin`, on
    /// as many lines as the width needs ([`Canvas::colour_key_lines`]).
    fn colour_key(&mut self, font: Font, row: usize, margin: usize, entries: &[(&str, [u8; 3])]) {
        let swatch = font.height.val() / 2;
        for (line, group) in Self::colour_key_lines(font, self.cols, entries).iter().enumerate() {
            let r = row + line * font.line;
            let mut col = margin;
            for &(name, rgb) in group {
                self.fill(r + (font.height.val() - swatch) / 2, col, swatch, swatch, rgb);
                col += swatch + font.width;
                self.text(font, r, col, name, WHITE);
                col += (name.chars().count() + 2) * font.width;
            }
        }
    }

    /// The colour key's entries by line: a line holds the entries whose swatches and names fit in
    /// `cols` with a one-character margin each side (at least one entry per line).
    fn colour_key_lines<'e>(font: Font, cols: usize, entries: &[(&'e str, [u8; 3])]) -> Vec<Vec<(&'e str, [u8; 3])>> {
        let swatch = font.height.val() / 2;
        let width = cols.saturating_sub(2 * font.width);
        let mut lines: Vec<Vec<(&str, [u8; 3])>> = Vec::new();
        let mut used = 0;
        for &entry in entries {
            let need = swatch + font.width + (entry.0.chars().count() + 2) * font.width;
            match lines.last_mut() {
                Some(line) if used + need <= width => {
                    line.push(entry);
                    used += need;
                }
                _ => {
                    lines.push(vec![entry]);
                    used = need;
                }
            }
        }
        lines
    }

    /// Orientation letters at mid-height: the left edge shows where the row direction comes from.
    fn orientation_letters(&mut self, font: Font, v: &firstread_volume::Volume) {
        let (row_dir, _) = source_orientation(v);
        let right_letter = direction_letters(row_dir);
        let left_letter = direction_letters(row_dir.map(|x| -x));
        let mid = self.rows / 2;
        let box_w = font.width * left_letter.len().max(right_letter.len()) + 4;
        self.fill(mid.saturating_sub(2), 0, font.line + 2, box_w, [0, 0, 0]);
        self.text(font, mid, 2, &left_letter, WHITE);
        let right_col = self.cols.saturating_sub(box_w);
        self.fill(mid.saturating_sub(2), right_col, font.line + 2, box_w, [0, 0, 0]);
        self.text(font, mid, right_col + 2, &right_letter, WHITE);
    }

    /// Dimmed bands with `top` lines (each with its colour) and a colour key under them, and
    /// `bottom` lines in white; returns nothing, draws in place.
    fn legend(&mut self, font: Font, top: &[(String, [u8; 3])], key: &[(&str, [u8; 3])], bottom: &[String]) {
        let margin = font.width;
        let pad = font.line / 3;
        let key_lines = Self::colour_key_lines(font, self.cols, key).len();
        let top_h = pad * 2 + (top.len() + key_lines) * font.line;
        let bottom_h = pad * 2 + bottom.len() * font.line;
        self.dim_rows(0, top_h);
        self.dim_rows(self.rows.saturating_sub(bottom_h), self.rows);
        for (i, (line, colour)) in top.iter().enumerate() {
            self.text(font, pad + i * font.line, margin, line, *colour);
        }
        let bottom_start = self.rows.saturating_sub(bottom_h) + pad;
        for (i, line) in bottom.iter().enumerate() {
            self.text(font, bottom_start + i * font.line, margin, line, WHITE);
        }
        self.colour_key(font, pad + top.len() * font.line, margin, key);
    }

    fn set(&mut self, r: usize, c: usize, px: [u8; 3]) {
        if r < self.rows && c < self.cols {
            let i = (r * self.cols + c) * 3;
            self.rgb[i..i + 3].copy_from_slice(&px);
        }
    }

    fn get(&self, r: usize, c: usize) -> [u8; 3] {
        let i = (r * self.cols + c) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Dims rows `from..to` to [`BAND_DIM`] of their brightness.
    fn dim_rows(&mut self, from: usize, to: usize) {
        for r in from.min(self.rows)..to.min(self.rows) {
            for c in 0..self.cols {
                let px = self.get(r, c);
                self.set(r, c, blend(px, [0, 0, 0], 1.0 - BAND_DIM));
            }
        }
    }

    fn fill(&mut self, r0: usize, c0: usize, h: usize, w: usize, px: [u8; 3]) {
        for r in r0..r0 + h {
            for c in c0..c0 + w {
                self.set(r, c, px);
            }
        }
    }

    /// Draws `text` with its top-left corner at `(r0, c0)`; characters outside Basic Latin
    /// print as `?`.
    fn text(&mut self, font: Font, r0: usize, c0: usize, text: &str, px: [u8; 3]) {
        for (i, ch) in text.chars().enumerate() {
            let glyph = get_raster(ch, FontWeight::Regular, font.height)
                .or_else(|| get_raster('?', FontWeight::Regular, font.height));
            let Some(glyph) = glyph else { continue };
            let left = c0 + i * font.width;
            for (y, row) in glyph.rows().enumerate() {
                for (x, &a) in row.iter().enumerate() {
                    let (r, c) = (r0 + y, left + x);
                    if a > 0 && r < self.rows && c < self.cols {
                        let under = self.get(r, c);
                        self.set(r, c, blend(under, px, f64::from(a) / 255.0));
                    }
                }
            }
        }
    }
}

/// The font size used for an image.
#[derive(Clone, Copy)]
struct Font {
    height: RasterHeight,
    width: usize,
    line: usize,
}

impl Font {
    fn for_columns(cols: usize) -> Font {
        let height = match cols {
            0..700 => RasterHeight::Size16,
            700..1400 => RasterHeight::Size24,
            _ => RasterHeight::Size32,
        };
        Font { height, width: get_raster_width(FontWeight::Regular, height), line: height.val() + height.val() / 8 }
    }

    /// Characters on a line of an image `cols` wide, with a margin of one character each side.
    fn chars_per_line(self, cols: usize) -> usize {
        cols.saturating_sub(2 * self.width) / self.width.max(1)
    }
}

/// Words of `text` wrapped to lines of at most `max` characters (a longer word is cut).
fn wrap(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let (ll, wl) = (line.chars().count(), word.chars().count());
        if ll > 0 && ll + 1 + wl > max {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        while line.chars().count() > max {
            let head: String = line.chars().take(max).collect();
            line = line.chars().skip(max).collect();
            lines.push(head);
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn side_name(side: Side) -> &'static str {
    side.name()
}

fn level_name(level: Level) -> &'static str {
    level.name()
}

/// Legend lines of the pleural effusions, dense dependent regions and focal opacities.
fn other_findings(f: &firstread_findings::Findings) -> Vec<String> {
    let mut lines = Vec::new();
    let effusions: Vec<String> =
        f.effusions.iter().filter(|e| e.volume_ml > 0.0).map(|e| capitalised(&e.text)).collect();
    if effusions.is_empty() && !f.effusions.is_empty() {
        lines.push(format!("No {}", vocabulary::PLEURAL_EFFUSION.label));
    }
    lines.extend(effusions);
    lines.extend(f.indeterminate_dense.iter().map(|d| capitalised(&vocabulary::sided(d.side, &d.text))));
    let shown = firstread_findings::MAX_FOCAL_IN_RATIONALE;
    lines.extend(f.focal_lesions.iter().take(shown).map(|l| capitalised(&l.text)));
    let more = f.focal_lesions.len().saturating_sub(shown);
    if more > 0 {
        lines.push(format!("+{more} more {}", vocabulary::FOCAL_OPACITY.label));
    }
    lines
}

const WHITE: [u8; 3] = [255, 255, 255];
const YELLOW: [u8; 3] = [255, 214, 0];

fn draw_legend(img: &mut Canvas, input: &ResultInput, key: &KeyImage, index: usize, count: usize, masks: &RoleMasks) {
    let Some(f) = input.findings else { return };
    let m = input.manifest;
    let v = input.volume;
    let font = Font::for_columns(img.cols);
    let max_chars = font.chars_per_line(img.cols);

    let zones = if key.zones.is_empty() {
        "no opacity (middle slice)".to_owned()
    } else {
        key.zones
            .iter()
            .map(|z| format!("{} {} zone", side_name(z.side), level_name(z.level)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let z_mm = v.slices.get(key.slice).map_or(0.0, |s| s.position_mm[2]);
    // what the reader must know about this result (a prone scan, one lung much smaller than the
    // other) stands under the title, in its colour: the key image is what a PACS shows first
    let cautions = f.cautions.iter().map(|c| (format!("{}: {c}", vocabulary::CAUTION.label.to_uppercase()), YELLOW));
    let top: Vec<(String, [u8; 3])> = [(format!("firstread {} {} - NOT FOR DIAGNOSIS", m.name, m.version), YELLOW)]
        .into_iter()
        .chain(cautions)
        .chain([(
            format!(
                "Key image {}/{}: {zones} | slice {}/{} (z {z_mm:.1} mm)",
                index + 1,
                count,
                key.slice + 1,
                v.shape[0]
            ),
            WHITE,
        )])
        .flat_map(|(t, c)| wrap(&t, max_chars).into_iter().map(move |l| (l, c)))
        .collect();

    let mut bottom_text: Vec<String> = Vec::new();
    for z in &key.zones {
        let zone = f.zones.iter().find(|x| x.side == z.side && x.level == z.level);
        let (pct, score) = zone.map_or((0.0, 0), |x| (x.involvement.involvement_pct, x.score));
        bottom_text.push(format!(
            "{} {} zone {pct:.1} % (score {score}/5) | this slice {:.1} %",
            capitalise(side_name(z.side)),
            level_name(z.level),
            z.slice_opacity_pct(),
        ));
    }
    if key.zones.is_empty() {
        bottom_text.push("No opacity | this slice 0.0 %".to_owned());
    }
    bottom_text.push(format!(
        "{} {:.1} {} | {} {} | {}: {}",
        capitalised(vocabulary::INVOLVEMENT.label),
        f.total.involvement_pct,
        vocabulary::PERCENT.symbol,
        vocabulary::SEVERITY_SCORE.label,
        vocabulary::score_text(f),
        vocabulary::EXTENT_CLASS.label,
        vocabulary::class_text(f)
    ));
    bottom_text.extend(other_findings(f));
    bottom_text.push(format!("{} (RSNA): {}", capitalised(vocabulary::RSNA_SUGGESTION.label), f.pattern.label()));
    let bottom: Vec<String> = bottom_text.iter().flat_map(|t| wrap(t, max_chars)).collect();

    let mut entries =
        vec![("right lung", masks.right_rgb), ("left lung", masks.left_rgb), ("opacity", masks.opacity_rgb)];
    // one "effusion" entry when both sides share a colour, else one per side
    let one_colour = masks.effusions.windows(2).all(|w| w[0].2 == w[1].2);
    for (i, &(side, _, rgb)) in masks.effusions.iter().enumerate() {
        if one_colour && i > 0 {
            continue;
        }
        let name = match (one_colour, side) {
            (true, _) => "effusion",
            (false, Side::Right) => "R effusion",
            (false, Side::Left) => "L effusion",
        };
        entries.push((name, rgb));
    }
    img.legend(font, &top, &entries, &bottom);
    img.orientation_letters(font, v);
}

fn capitalise(s: &str) -> String {
    capitalised(s)
}

/// Patient Orientation letters (PS3.3 C.7.6.1.1.1) of an LPS direction: the letters of its
/// components larger than 0.25, largest first (e.g. `L`, `P`, `LP`).
pub fn direction_letters(d: [f64; 3]) -> String {
    let letters = [('L', 'R'), ('P', 'A'), ('H', 'F')];
    let mut parts: Vec<(f64, char)> = d
        .iter()
        .zip(letters)
        .filter(|(x, _)| x.abs() > 0.25)
        .map(|(&x, (pos, neg))| (x.abs(), if x > 0.0 { pos } else { neg }))
        .collect();
    parts.sort_by(|a, b| b.0.total_cmp(&a.0));
    parts.into_iter().map(|(_, c)| c).collect()
}

/// `under` blended towards `over` by `alpha` (0: `under`, 1: `over`).
fn blend(under: [u8; 3], over: [u8; 3], alpha: f64) -> [u8; 3] {
    std::array::from_fn(|i| {
        (f64::from(under[i]) * (1.0 - alpha) + f64::from(over[i]) * alpha).round().clamp(0.0, 255.0) as u8
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_colour_key_wraps_to_the_width() {
        let font = Font::for_columns(512);
        let entries = [
            ("Left lung", [0, 0, 0]),
            ("Right lung", [0, 0, 0]),
            ("Lung opacity", [0, 0, 0]),
            ("Low attenuation area (-950 HU)", [0, 0, 0]),
        ];
        let lines = Canvas::colour_key_lines(font, 512, &entries);
        let names: Vec<Vec<&str>> = lines.iter().map(|l| l.iter().map(|e| e.0).collect()).collect();
        assert_eq!(names, [vec!["Left lung", "Right lung", "Lung opacity"], vec!["Low attenuation area (-950 HU)"]]);
        // wide enough: one line
        assert_eq!(Canvas::colour_key_lines(font, 2000, &entries).len(), 1);
    }

    #[test]
    fn wrapping_keeps_lines_short() {
        let lines = wrap("Total involvement 4.2 % | severity score 6/30", 20);
        assert!(lines.iter().all(|l| l.chars().count() <= 20));
        assert_eq!(lines.join(" "), "Total involvement 4.2 % | severity score 6/30");
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
    }

    #[test]
    fn orientation_letters() {
        assert_eq!(direction_letters([1.0, 0.0, 0.0]), "L");
        assert_eq!(direction_letters([-1.0, 0.0, 0.0]), "R");
        assert_eq!(direction_letters([0.0, -1.0, 0.0]), "A");
        assert_eq!(direction_letters([0.0, 0.6, -0.8]), "FP");
    }

    #[test]
    fn every_legend_character_has_a_glyph() {
        let text = "firstread covid19-lung-ct 0.1.0 - NOT FOR DIAGNOSIS | (z -12.5 mm) 4/30 % <10 >75";
        assert!(text.chars().all(|c| get_raster(c, FontWeight::Regular, RasterHeight::Size16).is_some()));
    }
}
