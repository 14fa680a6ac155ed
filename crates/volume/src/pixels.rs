//! Pixel data of one slice to Hounsfield units in the canonical grid.
//!
//! - Decoding: dicom-pixeldata decodes every transfer syntax the node accepts (native, deflate,
//!   RLE, JPEG baseline/lossless, JPEG-LS via CharLS, JPEG 2000 via OpenJPEG), then
//!   `to_vec_with_options::<i32>` with the Modality LUT off gives raw stored words. Those are
//!   re-read here by Bits Stored (0028,0101), High Bit (0028,0102) and Pixel Representation
//!   (0028,0103) (PS3.5 8.1.1): masked to the stored bits and sign-extended when signed, so bits
//!   above High Bit (overlays, codecs that do not sign-extend) never change a value.
//! - Modality LUT (PS3.3 C.11.1.1.2): HU = stored x Rescale Slope (0028,1053) + Rescale Intercept
//!   (0028,1052), parsed leniently per slice (slopes may differ between slices). Missing values
//!   act as 1 and 0, with a warning: the CT Image module requires them, but HU = stored is the
//!   only sensible reading. A Modality LUT Sequence (0028,3000) without them is refused.
//! - Padding (PS3.3 C.7.5.1.1.2): voxels equal to Pixel Padding Value (0028,0120), or between it and
//!   Pixel Padding Range Limit (0028,0121), become the contract's `padding_hu`. Their VR is US or SS
//!   after Pixel Representation, and files carry the wrong one or UN; so the value's 16 (or 8) bit
//!   pattern is taken and read by Pixel Representation: -2000 as SS and 63536 (0xF830) as US are
//!   both -2000 in a signed image. A stored value matches on either its full-width or its
//!   stored-bits reading.
//! - Window, VOI LUT and rescale attributes are removed before decoding: the decoder would
//!   otherwise fail on inconsistent windows the volume never uses.

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder, PixelRepresentation};
use firstread_store::attributes::floats;

use crate::error::Refusal;
use crate::geometry::{AxialFrame, ImageGrid};
use crate::header::InstanceHeader;

/// What decoding one slice noticed, for `Volume::warnings`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SliceNotes {
    /// Rescale Slope or Intercept was absent, so 1 or 0 was used.
    pub rescale_missing: bool,
    /// Voxels set to `padding_hu`.
    pub padding_voxels: usize,
    /// Anything else worth a warning.
    pub other: Vec<String>,
}

/// How stored values sit in their allocated words (PS3.5 8.1.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StoredLayout {
    allocated_mask: u32,
    shift: u32,
    stored_mask: u32,
    bits_stored: u32,
    bits_allocated: u32,
    signed: bool,
}

impl StoredLayout {
    /// The layout, or `None` when the bit counts are inconsistent.
    pub fn new(bits_allocated: u16, bits_stored: u16, high_bit: u16, signed: bool) -> Option<Self> {
        let (a, s, h) = (u32::from(bits_allocated), u32::from(bits_stored), u32::from(high_bit));
        if !(a == 8 || a == 16) || s == 0 || s > a || h >= a || h + 1 < s {
            return None;
        }
        let mask = |bits: u32| ((1u64 << bits) - 1) as u32;
        Some(Self {
            allocated_mask: mask(a),
            shift: h + 1 - s,
            stored_mask: mask(s),
            bits_stored: s,
            bits_allocated: a,
            signed,
        })
    }

    /// The stored value of a raw word (as returned sign- or zero-extended by the decoder).
    pub fn stored(&self, raw: i32) -> i32 {
        let bits = ((raw as u32 & self.allocated_mask) >> self.shift) & self.stored_mask;
        sign_extend(bits, self.bits_stored, self.signed)
    }

    /// The raw word read over all allocated bits, by Pixel Representation.
    pub fn full_width(&self, raw: i32) -> i32 {
        sign_extend(raw as u32 & self.allocated_mask, self.bits_allocated, self.signed)
    }
}

fn sign_extend(bits: u32, width: u32, signed: bool) -> i32 {
    if signed && width < 32 && bits & (1 << (width - 1)) != 0 {
        (i64::from(bits) - (1i64 << width)) as i32
    } else {
        bits as i32
    }
}

/// The stored values that are padding: [lo, hi] inclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PaddingRange {
    lo: i32,
    hi: i32,
}

impl PaddingRange {
    /// Pixel Padding Value and optional Range Limit as numbers of whatever VR they were read with,
    /// re-read as words of `layout` by Pixel Representation.
    pub fn new(value: f64, range_limit: Option<f64>, layout: &StoredLayout) -> Option<Self> {
        let word = |v: f64| (v.is_finite() && v.fract() == 0.0).then(|| layout.full_width(v as i64 as i32));
        let a = word(value)?;
        let b = range_limit.and_then(word).unwrap_or(a);
        Some(Self { lo: a.min(b), hi: a.max(b) })
    }

    /// Whether a raw word is padding, on its full-width or its stored-bits reading.
    pub fn contains(&self, raw: i32, layout: &StoredLayout) -> bool {
        let inside = |v: i32| (self.lo..=self.hi).contains(&v);
        inside(layout.full_width(raw)) || inside(layout.stored(raw))
    }
}

/// Where the slice goes and how to fill it.
pub(crate) struct SliceTarget<'a> {
    pub grid: &'a ImageGrid,
    pub frame: &'a AxialFrame,
    pub padding_hu: f32,
}

/// Decodes `header`'s pixel data into `out` (canonical rows x cols, HU).
///
/// # Errors
/// [`Refusal::Io`] when the file cannot be read; [`Refusal::Decode`] when its pixel data cannot be
/// decoded or does not match the series grid.
pub(crate) fn decode_slice_hu(
    header: &InstanceHeader,
    target: &SliceTarget<'_>,
    out: &mut [f32],
) -> Result<SliceNotes, Refusal> {
    let uid = header.attrs.sop_instance_uid.as_str();
    let fail = |message: String| Refusal::Decode { sop_instance_uid: uid.to_owned(), message };
    let mut obj = OpenFileOptions::new()
        .open_file(&header.path)
        .map_err(|e| Refusal::Io { path: header.path.clone(), message: e.to_string() })?;
    let mut notes = SliceNotes::default();
    let slope = floats(&obj, tags::RESCALE_SLOPE).and_then(|v| v.first().copied());
    let intercept = floats(&obj, tags::RESCALE_INTERCEPT).and_then(|v| v.first().copied());
    if (slope.is_none() || intercept.is_none()) && obj.get(tags::MODALITY_LUT_SEQUENCE).is_some() {
        return Err(fail("Modality LUT Sequence (0028,3000) without Rescale Slope/Intercept is not supported".into()));
    }
    notes.rescale_missing = slope.is_none() || intercept.is_none();
    let (slope, intercept) = (slope.unwrap_or(1.0), intercept.unwrap_or(0.0));
    let padding_value = floats(&obj, tags::PIXEL_PADDING_VALUE).and_then(|v| v.first().copied());
    let padding_limit = floats(&obj, tags::PIXEL_PADDING_RANGE_LIMIT).and_then(|v| v.first().copied());
    for tag in [
        tags::WINDOW_CENTER,
        tags::WINDOW_WIDTH,
        tags::VOILUT_FUNCTION,
        tags::VOILUT_SEQUENCE,
        tags::RESCALE_SLOPE,
        tags::RESCALE_INTERCEPT,
        tags::RESCALE_TYPE,
    ] {
        obj.remove_element(tag);
    }
    let decoded = obj.decode_pixel_data().map_err(|e| fail(e.to_string()))?;
    let (rows, cols) = (target.grid.rows, target.grid.cols);
    if decoded.rows() as usize != rows || decoded.columns() as usize != cols {
        return Err(fail(format!(
            "decoded {}x{} pixels, the series grid is {rows}x{cols}",
            decoded.rows(),
            decoded.columns()
        )));
    }
    if decoded.samples_per_pixel() != 1 || !decoded.photometric_interpretation().is_monochrome() {
        return Err(fail(format!(
            "{} sample(s) per pixel, Photometric Interpretation {}: one monochrome sample expected",
            decoded.samples_per_pixel(),
            decoded.photometric_interpretation()
        )));
    }
    if decoded.number_of_frames() != 1 {
        return Err(fail(format!("{} frames: single-frame CT images expected", decoded.number_of_frames())));
    }
    let signed = decoded.pixel_representation() == PixelRepresentation::Signed;
    let layout = StoredLayout::new(decoded.bits_allocated(), decoded.bits_stored(), decoded.high_bit(), signed)
        .ok_or_else(|| {
            fail(format!(
                "Bits Allocated {}, Bits Stored {}, High Bit {}: not a supported layout",
                decoded.bits_allocated(),
                decoded.bits_stored(),
                decoded.high_bit()
            ))
        })?;
    let raw: Vec<i32> = decoded
        .to_vec_with_options(&ConvertOptions::new().with_modality_lut(ModalityLutOption::None))
        .map_err(|e| fail(e.to_string()))?;
    if raw.len() != rows * cols || out.len() != rows * cols {
        return Err(fail(format!("{} pixel values for a {rows}x{cols} grid", raw.len())));
    }
    let padding = padding_value.and_then(|v| PaddingRange::new(v, padding_limit, &layout));
    let rescale = Rescale { slope, intercept, padding_hu: target.padding_hu };
    notes.padding_voxels = fill_canonical(&raw, target, &layout, padding.as_ref(), &rescale, out);
    Ok(notes)
}

struct Rescale {
    slope: f64,
    intercept: f64,
    padding_hu: f32,
}

/// Copies a source slice into the canonical grid (flipping rows/columns), as HU; returns the
/// number of padding voxels.
fn fill_canonical(
    raw: &[i32],
    target: &SliceTarget<'_>,
    layout: &StoredLayout,
    padding: Option<&PaddingRange>,
    rescale: &Rescale,
    out: &mut [f32],
) -> usize {
    let (rows, cols) = (target.grid.rows, target.grid.cols);
    let mut padded = 0;
    for (r, out_row) in out.chunks_exact_mut(cols).enumerate().take(rows) {
        let sr = if target.frame.flip_rows { rows - 1 - r } else { r };
        let src_row = &raw[sr * cols..(sr + 1) * cols];
        for (c, voxel) in out_row.iter_mut().enumerate() {
            let sc = if target.frame.flip_cols { cols - 1 - c } else { c };
            let word = src_row[sc];
            *voxel = if padding.is_some_and(|p| p.contains(word, layout)) {
                padded += 1;
                rescale.padding_hu
            } else {
                (f64::from(layout.stored(word)) * rescale.slope + rescale.intercept) as f32
            };
        }
    }
    padded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_are_masked_and_sign_extended() {
        let signed12 = StoredLayout::new(16, 12, 11, true).expect("layout");
        assert_eq!(signed12.stored(-2000), -2000); // 0xF830, sign-extended by the writer
        assert_eq!(signed12.stored(0x0830), -2000); // 12-bit pattern, not sign-extended
        assert_eq!(signed12.stored(2047), 2047);
        let unsigned12 = StoredLayout::new(16, 12, 11, false).expect("layout");
        assert_eq!(unsigned12.stored(0xF123), 0x123); // overlay bits above High Bit
        let signed16 = StoredLayout::new(16, 16, 15, true).expect("layout");
        assert_eq!(signed16.stored(63536), -2000);
        assert_eq!(signed16.full_width(-2000), -2000);
        let shifted = StoredLayout::new(16, 12, 15, false).expect("layout");
        assert_eq!(shifted.stored(0x1230), 0x123);
        assert!(StoredLayout::new(16, 17, 16, false).is_none());
        assert!(StoredLayout::new(16, 12, 10, false).is_none());
    }

    #[test]
    fn padding_value_is_read_by_pixel_representation() {
        let signed = StoredLayout::new(16, 16, 15, true).expect("layout");
        let as_ss = PaddingRange::new(-2000.0, None, &signed).expect("padding");
        let as_us = PaddingRange::new(63536.0, None, &signed).expect("padding");
        assert_eq!(as_ss, as_us);
        assert!(as_ss.contains(-2000, &signed));
        assert!(!as_ss.contains(-1999, &signed));
        let unsigned = StoredLayout::new(16, 16, 15, false).expect("layout");
        let ss_in_unsigned = PaddingRange::new(-2000.0, None, &unsigned).expect("padding");
        assert!(ss_in_unsigned.contains(63536, &unsigned));
        let range = PaddingRange::new(-2000.0, Some(-1500.0), &signed).expect("padding");
        assert!(range.contains(-1700, &signed) && !range.contains(-1400, &signed));
        let signed12 = StoredLayout::new(16, 12, 11, true).expect("layout");
        let p = PaddingRange::new(-2000.0, None, &signed12).expect("padding");
        assert!(p.contains(0x0830, &signed12));
        assert!(PaddingRange::new(f64::NAN, None, &signed).is_none());
    }
}
