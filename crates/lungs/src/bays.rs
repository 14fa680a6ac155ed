//! Dense lesions in a bay of the lung's outline, and the caps of dense lesions.
//!
//! A dense mass against the mediastinum or the chest wall has the density of what it abuts, so
//! the model's lung mask (aerated lung and what it encloses) leaves out most of it: the lung
//! wraps around the mass on most sides, but not on the side where it touches the mediastinum or
//! the wall. The lung's outline then has a *bay*, a concavity narrower than the mass. Concavities
//! of the lung's border that are narrower than a disc, closed by a morphological closing, are
//! the way juxtapleural nodules are taken back into the lung in rule-based segmentation (Armato
//! & Sensakovic, "Automated lung segmentation for thoracic CT: impact on computer-aided
//! diagnosis", Acad Radiol 2004;11(9):1011-1021, rolling ball; Pu et al., "Adaptive border
//! marching algorithm: automatic lung segmentation on chest CT images", Comput Med Imaging Graph
//! 2008;32(6):452-462, concavities along the border). Closing also takes the hilum, the heart's
//! and the liver's edges, so a bay is taken only when what fills it looks like one lesion:
//!
//! 1. Per slice and lung (on a grid of about [`COARSE_MM`]): the closing of the lung with a disc
//!    of radius [`BAY_RADIUS_MM`]; its pixels outside both lungs (and outside any effusion) are
//!    open bays. A pixel of an open bay is kept where, going up and going down through open
//!    bays, the same lung is reached within [`CAP_REACH_MM`]: a lesion lies within the lung's
//!    height, while the bays along the spine, the aorta and the heart continue through tissue
//!    over many slices, and those along the heart, the liver and the spleen rest on the
//!    diaphragm.
//! 2. A slice's bay region (8-connected) is kept when at least [`MIN_SOLID_SHARE`] of it is
//!    solid soft tissue ([`SOLID_HU`]: no fat, no air, no bone or contrast-filled vessel; the
//!    hilum is bronchi, fat and vessels). Their solid voxels, joined in 3-D (26-connected) with
//!    the dense (> -300 HU) opacity of the lung they continue, are a lesion when the whole is at
//!    least [`MIN_LESION_ML`] and [`MIN_HEIGHT_MM`] high and the bays' part is homogeneous
//!    (standard deviation at most [`MAX_SD_HU`]). The lesion's bay regions (fat and bone left
//!    out), the solid tissue under their footprint one slice beyond each end, and the solid
//!    tissue within [`MOUTH_MM`] of them in-plane (the bay's mouth, which the disc enters) are
//!    then lung, and opacity above -700 HU.
//! 3. Caps: the top and bottom of a dense lesion, where its cross-section is small, are in the
//!    lung's mask but often not called opacity by the model (it suppresses small dense regions as
//!    vessels). Dense lung voxels (> -300 HU) right above or below a dense opacity of at least
//!    [`MIN_LESION_ML`], within its footprint, are opacity, slice by slice through solid ones,
//!    for at most [`CAP_MM`].
//!
//! What it cannot do: a lesion wider than about twice [`BAY_RADIUS_MM`] where it touches the
//! mediastinum or the wall leaves a bay the disc enters, and stays outside the lung (the part the
//! model encloses is kept); a lesion taller than [`CAP_REACH_MM`], or one that continues into the
//! hilum, the heart or a vessel of the same density, is not capped by lung or not homogeneous,
//! and is left out. On a scan without contrast the aortic arch and the heart's edges have the
//! density of a mass; only the caps rule tells them apart.

use crate::cavity::{components, per_slice, row_spans, Bits, Refined, FAT_HU};

/// Radius of the disc that closes the lung's outline (mm): bays up to about twice as wide are
/// closed.
pub const BAY_RADIUS_MM: f64 = 24.0;
/// Pixel size of the grid the closing runs on (mm).
pub const COARSE_MM: f64 = 2.0;
/// Solid soft tissue (HU): above fat, below bone and contrast-filled vessels.
pub const SOLID_HU: [f32; 2] = [-60.0, 110.0];
/// Smallest share of a bay that is solid for it to be a lesion.
pub const MIN_SOLID_SHARE: f64 = 0.8;
/// Smallest lesion (mL): about 14 mm in diameter.
pub const MIN_LESION_ML: f64 = 1.5;
/// Largest standard deviation of a lesion's HU (after denoising).
pub const MAX_SD_HU: f64 = 35.0;
/// A bay pixel is kept only where the same lung lies above it and below it within this
/// distance (mm): a lesion lies within the lung's height, while the bays along the spine, the
/// aorta and the heart continue over many slices, and those along the heart, the liver and the
/// spleen rest on the diaphragm.
pub const CAP_REACH_MM: f64 = 50.0;
/// How far the caps of a dense lesion are followed (mm).
pub const CAP_MM: f64 = 15.0;

/// How far a lesion found in a bay is grown into the solid tissue at the bay's mouth, which the
/// disc enters (mm): about what a disc of [`BAY_RADIUS_MM`] enters a mouth 35 mm wide.
pub const MOUTH_MM: f64 = 6.0;
/// Smallest height of a lesion (mm): a focal lesion is at least 10 mm across.
pub const MIN_HEIGHT_MM: f64 = 10.0;

const DENSE_HU: f32 = -300.0;
const OPACITY_LOW_HU: f32 = -700.0;

/// The closing of one slice's lung (`[rows, cols]`, non-zero = lung) with a disc of
/// `radius_mm`, computed on a grid of `factor` x `factor` pixels (a cell is lung where any of its
/// pixels is): the pixel indices it holds, in order (the lung's own among them); `None` when the
/// slice holds no lung.
fn closing(lung: &[u8], [rows, cols]: [usize; 2], pixel_mm: f64, factor: usize, radius_mm: f64) -> Option<Vec<u32>> {
    // each row's first and last lung column, and the lung's box
    let spans: Vec<Option<(usize, usize)>> = row_spans(lung, cols).take(rows).collect();
    let r0 = spans.iter().position(Option::is_some)?;
    let r1 = spans.iter().rposition(Option::is_some)?;
    let c0 = spans.iter().flatten().map(|s| s.0).min()?;
    let c1 = spans.iter().flatten().map(|s| s.1).max()?;
    let radius = radius_mm / (pixel_mm * factor as f64);
    let pad = radius.ceil() as usize + 2;
    // the grid: the lung's box in cells, padded by `pad` cells (cell (y, x) is at pixel cell
    // (y + cr0 - pad, x + cc0 - pad))
    let (cr0, cc0) = (r0 / factor, c0 / factor);
    let (h, w) = (r1 / factor - cr0 + 1 + 2 * pad, c1 / factor - cc0 + 1 + 2 * pad);
    let mut cells = vec![false; w * h];
    for (r, span) in spans.iter().enumerate() {
        let Some((first, last)) = *span else { continue };
        let row = (r / factor - cr0 + pad) * w;
        for c in (first..=last).filter(|&c| lung[r * cols + c] != 0) {
            cells[row + c / factor - cc0 + pad] = true;
        }
    }
    let r2 = radius * radius;
    let outside: Vec<bool> =
        crate::distance::squared(&cells, &[h, w], &[1.0, 1.0]).into_iter().map(|d| d > r2).collect();
    let closed: Vec<bool> =
        crate::distance::squared(&outside, &[h, w], &[1.0, 1.0]).into_iter().map(|d| d > r2).collect();
    // only cells within the dilation can be closed: the pixels of the padded box
    let (pr0, pc0) = ((cr0 * factor).saturating_sub(pad * factor), (cc0 * factor).saturating_sub(pad * factor));
    let (pr1, pc1) = (((cr0 + h - pad) * factor).min(rows), ((cc0 + w - pad) * factor).min(cols));
    let column_cell: Vec<usize> = (pc0..pc1).map(|c| c / factor + pad - cc0).collect();
    let mut out = Vec::new();
    for r in pr0..pr1 {
        let row = &closed[(r / factor + pad - cr0) * w..][..w];
        out.extend(column_cell.iter().zip(pc0..pc1).filter(|(&x, _)| row[x]).map(|(_, c)| (r * cols + c) as u32));
    }
    Some(out)
}

/// What the bays step (`close_bays`) took into the lungs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BayLesions {
    /// Lesions taken from bays of the outline, per side (left, right): their volumes (mL).
    pub bays_ml: [Vec<f64>; 2],
    /// Voxels of the lungs made opacity as the caps of dense lesions (mL).
    pub caps_ml: f64,
}

/// Takes dense lesions in bays of each lung's outline into that lung and its opacity, then the
/// caps of dense lesions into the opacity (the module's steps 1-3). `hu`, masks
/// `[slices, rows, cols]`; `spacing_mm` `[slice, row, col]`.
pub(crate) fn close_bays(out: &mut Refined, hu: &[f32], shape: [usize; 3], spacing_mm: [f64; 3]) -> BayLesions {
    let [slices, rows, cols] = shape;
    let plane = rows * cols;
    let pixel_mm = spacing_mm[1].max(spacing_mm[2]);
    let factor = ((COARSE_MM / pixel_mm).round() as usize).max(1);
    let voxel_ml = spacing_mm.iter().product::<f64>() / 1000.0;
    let mut found = BayLesions::default();
    for side in 0..2 {
        // 1. bays per slice
        let lung = if side == 0 { &out.left_lung } else { &out.right_lung };
        let (el, er) = (&out.effusion_left, &out.effusion_right);
        let free = |i: usize| out.left_lung[i] == 0 && out.right_lung[i] == 0 && el[i] == 0 && er[i] == 0;
        // each slice's open bays: pixel indices, in order
        let open: Vec<Vec<u32>> = per_slice(slices, |k| {
            let range = k * plane..(k + 1) * plane;
            let closed = closing(&lung[range], [rows, cols], pixel_mm, factor, BAY_RADIUS_MM).unwrap_or_default();
            closed.into_iter().filter(|&p| free(k * plane + p as usize)).collect()
        });
        let mut open_bits = Bits::new(slices * plane);
        for (k, pixels) in open.iter().enumerate() {
            for &p in pixels {
                open_bits.set(k * plane + p as usize);
            }
        }
        let in_open = |k: usize, p: usize| open_bits.get(k * plane + p);
        // ... kept where, going up and going down through bays, this lung is reached within
        // [`CAP_REACH_MM`]
        let reach = (CAP_REACH_MM / spacing_mm[0]).round().max(1.0) as usize;
        let capped = |k: usize, p: usize, up: bool| -> bool {
            let mut kk = k;
            for _ in 0..reach {
                let next = if up { Some(kk + 1).filter(|&n| n < slices) } else { kk.checked_sub(1) };
                let Some(next) = next else { return false };
                kk = next;
                if lung[kk * plane + p] != 0 {
                    return true;
                }
                if !in_open(kk, p) {
                    return false;
                }
            }
            false
        };
        // 2. in-plane bays capped by lung and mostly of solid tissue (each slice's
        // regions, labelled from 1), then their solid voxels joined in 3-D
        let solid_hu = |i: usize| (SOLID_HU[0]..SOLID_HU[1]).contains(&hu[i]);
        let regions: Vec<(Vec<u32>, Vec<Vec<u32>>)> = per_slice(slices, |k| {
            let seeds: Vec<usize> =
                open[k].iter().map(|&p| p as usize).filter(|&p| capped(k, p, true) && capped(k, p, false)).collect();
            if seeds.is_empty() {
                return (Vec::new(), Vec::new());
            }
            let mut bay = vec![false; plane];
            for &p in &seeds {
                bay[p] = true;
            }
            let base = k * plane;
            let mut label = vec![0u32; plane];
            let mut kept = Vec::new();
            for region in components(&|p: usize| bay[p], [1, rows, cols], &seeds) {
                let solid = region.iter().filter(|&&p| solid_hu(base + p as usize)).count();
                if solid as f64 >= MIN_SOLID_SHARE * region.len() as f64 {
                    kept.push(region);
                    let id = kept.len() as u32;
                    for &p in &kept[kept.len() - 1] {
                        label[p as usize] = id;
                    }
                }
            }
            (label, kept)
        });
        let label = |i: usize| regions[i / plane].0.get(i % plane).copied().unwrap_or(0);
        let in_solid_bay = |i: usize| label(i) != 0 && solid_hu(i);
        // a bay's solid voxels, with the dense opacity of this lung they continue
        let part = |i: usize| in_solid_bay(i) || (lung[i] != 0 && out.opacity[i] != 0 && hu[i] > DENSE_HU);
        let seeds: Vec<usize> = regions
            .iter()
            .enumerate()
            .flat_map(|(k, (_, kept))| kept.iter().flatten().map(move |&p| k * plane + p as usize))
            .filter(|&i| solid_hu(i))
            .collect();
        let mut lesions = Vec::new();
        for whole in components(&part, shape, &seeds) {
            let lesion: Vec<u32> = whole.iter().copied().filter(|&i| in_solid_bay(i as usize)).collect();
            let n = lesion.len() as f64;
            let mean = lesion.iter().map(|&i| f64::from(hu[i as usize])).sum::<f64>() / n;
            let sd = (lesion.iter().map(|&i| (f64::from(hu[i as usize]) - mean).powi(2)).sum::<f64>() / n).sqrt();
            let ml = whole.len() as f64 * voxel_ml;
            let height_mm =
                (whole[whole.len() - 1] as usize / plane - whole[0] as usize / plane + 1) as f64 * spacing_mm[0];
            if ml < MIN_LESION_ML || sd > MAX_SD_HU || height_mm < MIN_HEIGHT_MM {
                continue;
            }
            let (first, last) = (lesion[0] as usize / plane, lesion[lesion.len() - 1] as usize / plane);
            // the whole of each in-plane bay it runs through (the partial-volume rim against
            // the lung included, fat and bone not), and one slice beyond each end under its
            // footprint
            let mut taken: Vec<(usize, u32)> =
                lesion.iter().map(|&i| (i as usize / plane, label(i as usize))).collect();
            taken.sort_unstable();
            taken.dedup();
            let mut voxels: Vec<usize> = taken
                .iter()
                .flat_map(|&(k, id)| regions[k].1[id as usize - 1].iter().map(move |&p| k * plane + p as usize))
                .filter(|&i| solid_hu(i) || hu[i] < FAT_HU[0])
                .collect();
            for (end, beyond) in [(first, first.checked_sub(1)), (last, Some(last + 1).filter(|&b| b < slices))] {
                let Some(beyond) = beyond else { continue };
                let cap: Vec<usize> = voxels
                    .iter()
                    .filter(|&&i| i / plane == end)
                    .map(|&i| beyond * plane + i % plane)
                    .filter(|&j| solid_hu(j) && free(j))
                    .collect();
                voxels.extend(cap);
            }
            // the mouth of the bay, which the disc enters: solid tissue within [`MOUTH_MM`]
            let mouth = grow_in_plane(&voxels, [rows, cols], (MOUTH_MM / pixel_mm).round() as usize, |j| {
                solid_hu(j) && free(j)
            });
            voxels.extend(mouth);
            lesions.push(voxels);
        }
        let lung_out = if side == 0 { &mut out.left_lung } else { &mut out.right_lung };
        for voxels in lesions {
            for &i in &voxels {
                lung_out[i] = 1;
                if hu[i] > OPACITY_LOW_HU {
                    out.opacity[i] = 1;
                }
            }
            found.bays_ml[side].push(voxels.len() as f64 * voxel_ml);
        }
    }
    found.caps_ml = caps(out, hu, shape, spacing_mm) as f64 * voxel_ml;
    found
}

/// The voxels reached from `from` (indices into `[slices, rows, cols]`) in-plane (8-connected)
/// in at most `steps` steps through voxels for which `open` holds, `from` excluded.
fn grow_in_plane(from: &[usize], [rows, cols]: [usize; 2], steps: usize, open: impl Fn(usize) -> bool) -> Vec<usize> {
    let plane = rows * cols;
    let mut seen: std::collections::HashSet<usize> = from.iter().copied().collect();
    let mut front: Vec<usize> = from.to_vec();
    let mut grown = Vec::new();
    for _ in 0..steps {
        let mut next = Vec::new();
        for &i in &front {
            let (k, r, c) = (i / plane, (i % plane) / cols, i % cols);
            for (dr, dc) in [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)] {
                let (rr, cc) = (r as isize + dr, c as isize + dc);
                if rr < 0 || cc < 0 || rr as usize >= rows || cc as usize >= cols {
                    continue;
                }
                let j = k * plane + rr as usize * cols + cc as usize;
                if open(j) && seen.insert(j) {
                    next.push(j);
                }
            }
        }
        grown.extend_from_slice(&next);
        front = next;
    }
    grown
}

/// Step 3: solid lung voxels right above or below a dense opacity of at least
/// [`MIN_LESION_ML`], within its footprint, become opacity, slice by slice for at most
/// [`CAP_MM`]. Returns how many voxels were added.
fn caps(out: &mut Refined, hu: &[f32], shape: [usize; 3], spacing_mm: [f64; 3]) -> usize {
    let [slices, rows, cols] = shape;
    let plane = rows * cols;
    let voxel_ml = spacing_mm.iter().product::<f64>() / 1000.0;
    let dense = |i: usize| out.opacity[i] != 0 && hu[i] > DENSE_HU;
    let seeds: Vec<usize> =
        per_slice(slices, |k| (k * plane..(k + 1) * plane).filter(|&i| dense(i)).collect::<Vec<_>>()).concat();
    let lesions: Vec<usize> = components(&dense, shape, &seeds)
        .into_iter()
        .filter(|c| c.len() as f64 * voxel_ml >= MIN_LESION_ML)
        .flatten()
        .map(|i| i as usize)
        .collect();
    let steps = (CAP_MM / spacing_mm[0]).floor() as usize;
    // a cap voxel is dense; the cap continues only through solid ones
    let cap =
        |o: &Refined, i: usize| (o.left_lung[i] != 0 || o.right_lung[i] != 0) && o.opacity[i] == 0 && hu[i] > DENSE_HU;
    let mut added = 0;
    for down in [false, true] {
        let mut front = lesions.clone();
        for _ in 0..steps {
            let mut next = Vec::new();
            for &i in &front {
                let k = i / plane;
                let Some(j) = (if down { k.checked_sub(1) } else { Some(k + 1).filter(|&k| k < slices) })
                    .map(|kk| kk * plane + i % plane)
                else {
                    continue;
                };
                if cap(out, j) {
                    out.opacity[j] = 1;
                    added += 1;
                    if hu[j] > SOLID_HU[0] {
                        next.push(j);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            front = next;
        }
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A right lung (columns 5..60 of 120, 2 mm pixels, 5 mm slices, lung in slices 2..18 of 20)
    /// against a mediastinum of soft tissue (40 HU, columns 60..115), with, where `mass`, a 40
    /// mm sphere of 30 HU centred 10 mm into the lung from the mediastinum at slice 10, and where
    /// `bump`, a 30 mm wide ridge of mediastinum pushing 20 mm into the lung over every slice
    /// (the heart, the aorta). The model's mask is the aerated lung. Returns (hu, refined, mass
    /// voxels in the lung block).
    fn paramediastinal(mass: bool, bump: bool) -> (Vec<f32>, Refined, Vec<usize>, [usize; 3], [f64; 3]) {
        let (shape, spacing) = ([20, 120, 120], [5.0, 2.0, 2.0]);
        let [slices, rows, cols] = shape;
        let n = slices * rows * cols;
        let mut hu = vec![-1000.0f32; n];
        let mut truth = Vec::new();
        for k in 0..slices {
            for r in 5..115 {
                for c in 5..115 {
                    let i = (k * rows + r) * cols + c;
                    let in_lung = (2..18).contains(&k) && c < 60;
                    hu[i] = if in_lung { -850.0 } else { 40.0 };
                    if bump && in_lung && (45..60).contains(&r) && c >= 50 {
                        hu[i] = 40.0;
                    }
                    let d = (((k as f64 - 10.0) * 5.0).powi(2)
                        + ((r as f64 - 80.0) * 2.0).powi(2)
                        + ((c as f64 - 55.0) * 2.0).powi(2))
                    .sqrt();
                    if mass && in_lung && d <= 20.0 {
                        hu[i] = 30.0;
                        truth.push(i);
                    }
                }
            }
        }
        let right: Vec<u8> = hu.iter().map(|&h| u8::from(h < -400.0 && h > -950.0)).collect();
        let refined = Refined::of_model(&vec![0; n], &right, &vec![0; n]);
        (hu, refined, truth, shape, spacing)
    }

    #[test]
    fn a_mass_against_the_mediastinum_is_taken_into_the_lung_and_a_ridge_of_it_is_not() {
        let (hu, mut out, truth, shape, spacing) = paramediastinal(true, true);
        assert!(truth.iter().all(|&i| out.right_lung[i] == 0), "the model's mask leaves the mass out");
        let found = close_bays(&mut out, &hu, shape, spacing);
        let inside = truth.iter().filter(|&&i| out.right_lung[i] != 0 && out.opacity[i] != 0).count();
        assert!(inside as f64 >= 0.9 * truth.len() as f64, "{inside} of {}", truth.len());
        assert_eq!(found.bays_ml[1].len(), 1, "{found:?}");
        // the ridge (in every slice: not capped by lung) and the mediastinum stay out
        let [_, rows, cols] = shape;
        let at = |k: usize, r: usize, c: usize| (k * rows + r) * cols + c;
        assert!((2..18).all(|k| out.right_lung[at(k, 52, 55)] == 0), "ridge");
        let added_outside: usize = (0..hu.len()).filter(|&i| out.right_lung[i] != 0 && i % cols >= 60).count();
        // the mass's mouth against the mediastinum, at most MOUTH_MM deep
        assert!(added_outside as f64 <= 0.15 * truth.len() as f64, "{added_outside} voxels in the mediastinum");

        let (hu, mut out, _, shape, spacing) = paramediastinal(false, true);
        let before = out.right_lung.clone();
        let found = close_bays(&mut out, &hu, shape, spacing);
        assert_eq!(out.right_lung, before, "nothing taken without a mass: {found:?}");
    }

    #[test]
    fn a_bay_narrower_than_the_disc_is_closed_and_a_wide_one_is_not() {
        // a 100 x 100 mm lung square at 1 mm with a 30 mm wide, 30 mm deep notch in its left
        // side and a 70 mm wide one in its right side
        let (rows, cols) = (160, 160);
        let mut lung = vec![0u8; rows * cols];
        for r in 30..130 {
            for c in 30..130 {
                let narrow = (65..95).contains(&r) && c < 60;
                let wide = (45..115).contains(&r) && c >= 100;
                if !narrow && !wide {
                    lung[r * cols + c] = 1;
                }
            }
        }
        let closed = closing(&lung, [rows, cols], 1.0, 2, BAY_RADIUS_MM).expect("lung");
        let closed = |r: usize, c: usize| closed.binary_search(&((r * cols + c) as u32)).is_ok();
        assert!(closed(80, 45), "narrow notch closed");
        assert!(closed(80, 40), "narrow notch closed up to its mouth (a disc enters the mouth by 5 mm)");
        assert!(!closed(80, 115), "wide notch open");
        assert!(!closed(10, 10), "outside stays outside");
    }
}
