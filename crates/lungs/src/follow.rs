//! A lesion that the refined lung encloses, followed into the slices where it touches the
//! mediastinum or the chest wall.
//!
//! The model keeps a mass in the lung where aerated lung encloses it in some slices and follows
//! it from there into the slices where it reaches the hilum or the wall (`follow_lesion` in
//! `models/covid19-lung-ct/export.py`). Once the lung behind a mass is consolidated, aerated lung
//! no longer encloses it, and the model drops the whole mass, in every slice: on the real sample
//! resampled to 2 mm slices, a 110 mL tumour whose lower end rests on a written dependent layer
//! (`tests/severe.rs`). The pleural-cavity step adds the layer, and the refined lung encloses the
//! mass again ([`crate::cavity`], step 7); this step follows it from there the way the model
//! does: slice by slice, a voxel joins when it is dense, within [`REACH_MM`] of this lung and of
//! the enclosed part's footprint, and within [`GROW_MM`] in-plane of the lesion in the previous
//! slice; following stops in a direction where the cross-section falls below half of its largest
//! so far (the lesion's tip, or a creep along the wall or the mediastinum), and starts again at
//! the next enclosed part of it; the way down starts from what the way up found.

use crate::cavity::{box_filter, open, outside_of, pixel_box, Refined};

/// How far from the lung (in-plane) and from the enclosed part's footprint a followed lesion
/// reaches (mm): the model's `LESION_REACH_MM`.
pub const REACH_MM: f64 = 15.0;
/// How much a lesion's cross-section may grow from one slice to the next (mm in-plane): one
/// voxel of the model's 2.5 mm working grid.
pub const GROW_MM: f64 = 2.5;
/// Half-width of the in-plane opening that keeps the mass-like part of an enclosed region (mm):
/// the model's `VESSEL_MM` (narrower parts are vessels and bronchial walls).
pub const MASS_MM: f64 = 5.0;
/// Dense tissue (HU), below bone and contrast-filled vessels: the model's `DENSE_HU` and
/// `BONE_HU`.
const DENSE_HU: [f32; 2] = [-300.0, 150.0];
const OPACITY_LOW_HU: f32 = -700.0;

/// Follows, per side, the mass-like dense part of `enclosed` (voxel indices the refined lung
/// encloses in-plane and this step added, `[slices, rows, cols]` = `shape`) through the slices,
/// and adds what it reaches to that lung and its opacity (above -700 HU). With `cores` (the
/// pipeline's `follow = "air-bronchograms"`, 0.2.3), what the enclosed voxels of a slice enclose
/// in turn is part of the seed: a lesion of the consolidation's density whose core the following
/// of the consolidation took as lung before the lesion was enclosed leaves only a ring around
/// that core enclosed, too thin for the mass-like opening (the sample's tumour, lost in every
/// slice above the consolidated lobe without it). Returns the number of voxels added per side.
pub(crate) fn follow_enclosed(
    out: &mut Refined,
    hu: &[f32],
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    enclosed: &[Vec<u32>; 2],
    cores: bool,
) -> [usize; 2] {
    let [slices, rows, cols] = shape;
    let plane = rows * cols;
    let pixel_mm = spacing_mm[1].min(spacing_mm[2]);
    let px = |mm: f64| (mm / pixel_mm).round().max(1.0) as usize;
    let (reach, grow, mass) = (px(REACH_MM), px(GROW_MM), px(MASS_MM));
    let dense = |v: f32| v > DENSE_HU[0] && v < DENSE_HU[1];
    let mut added = [0; 2];
    for side in 0..2 {
        // the seeds: the mass-like dense part of the enclosed voxels and of what they enclose,
        // per slice
        let mut per_slice: Vec<Vec<usize>> = vec![Vec::new(); slices];
        for &i in &enclosed[side] {
            let i = i as usize;
            per_slice[i / plane].push(i % plane);
        }
        let Some(all) = pixel_box(per_slice.iter().flatten().copied(), cols) else { continue };
        // everything happens inside the seeds' box grown by twice the reach (the footprint's
        // reach, then the lung's within it)
        let margin = 2 * reach + 1;
        let (r0, c0) = (all.0.saturating_sub(margin), all.2.saturating_sub(margin));
        let (r1, c1) = ((all.1 + margin).min(rows - 1), (all.3 + margin).min(cols - 1));
        let (w, h) = (c1 - c0 + 1, r1 - r0 + 1);
        let to_box = |p: usize| -> usize { (p / cols - r0) * w + p % cols - c0 };
        let to_plane = |q: usize| -> usize { (r0 + q / w) * cols + c0 + q % w };
        let mut seeds: Vec<Option<Vec<bool>>> = vec![None; slices];
        let mut footprint = vec![false; w * h];
        for (k, pixels) in per_slice.iter().enumerate() {
            if pixels.is_empty() {
                continue;
            }
            let mut ring = vec![false; w * h];
            for &p in pixels {
                ring[to_box(p)] = true;
            }
            // a lesion whose core the following of a consolidation already took as lung is
            // enclosed as a ring around it: the core is part of the lesion
            let within = if cores { outside_of(|q| ring[q], w, h).into_iter().map(|o| !o).collect() } else { ring };
            let m: Vec<bool> = (0..w * h).map(|q| within[q] && dense(hu[k * plane + to_plane(q)])).collect();
            let m = open(&m, w, h, mass);
            if m.contains(&true) {
                for (f, &v) in footprint.iter_mut().zip(&m) {
                    *f |= v;
                }
                seeds[k] = Some(m);
            }
        }
        let (Some(first), Some(last)) =
            (seeds.iter().position(Option::is_some), seeds.iter().rposition(Option::is_some))
        else {
            continue;
        };
        let cylinder = box_filter(&footprint, w, h, reach, false);
        let (lung, other, effusion) = if side == 0 {
            (&out.left_lung, &out.right_lung, &out.effusion_left)
        } else {
            (&out.right_lung, &out.left_lung, &out.effusion_right)
        };
        // where slice k lets the lesion grow: dense, near this lung and the footprint, in no
        // mask yet (the lung's own dense parts, a consolidated layer among them, are no path: the
        // lesion is followed where the lung lost it)
        let allowed = |k: usize| -> Vec<bool> {
            let base = k * plane;
            let lung_box: Vec<bool> = (0..w * h).map(|q| lung[base + to_plane(q)] != 0).collect();
            let near = box_filter(&lung_box, w, h, reach, false);
            (0..w * h)
                .map(|q| {
                    let i = base + to_plane(q);
                    cylinder[q] && near[q] && !lung_box[q] && dense(hu[i]) && other[i] == 0 && effusion[i] == 0
                })
                .collect()
        };
        let mut lesion: Vec<Option<Vec<bool>>> = seeds.clone();
        let up: Vec<usize> = (first..slices).collect();
        let down: Vec<usize> = (0..=last).rev().collect();
        for order in [up, down] {
            let mut largest = 0usize;
            let mut previous: Option<Vec<bool>> = None;
            for k in order {
                // what is known of the lesion here (the seeds, and on the way down what the way up
                // found, as in the model), grown from the slice before
                let mut cross = lesion[k].clone().unwrap_or_else(|| vec![false; w * h]);
                if let Some(prev) = &previous {
                    let reached = box_filter(prev, w, h, grow, false);
                    for ((c, r), a) in cross.iter_mut().zip(reached).zip(allowed(k)) {
                        *c |= r && a;
                    }
                }
                let area = cross.iter().filter(|&&v| v).count();
                if area == 0 {
                    // nothing to follow from here; a later seed starts again
                    if !(first..=last).contains(&k) {
                        break;
                    }
                    previous = None;
                    continue;
                }
                if seeds[k].is_none() && 2 * area < largest {
                    // the lesion's tip, or a creep along the wall; a later seed starts again
                    if !(first..=last).contains(&k) {
                        break;
                    }
                    (previous, largest) = (None, 0);
                    continue;
                }
                largest = largest.max(area);
                match &mut lesion[k] {
                    Some(l) => l.iter_mut().zip(&cross).for_each(|(l, &c)| *l |= c),
                    None => lesion[k] = Some(cross.clone()),
                }
                previous = Some(cross);
            }
        }
        let lung_out = if side == 0 { &mut out.left_lung } else { &mut out.right_lung };
        for (k, l) in lesion.iter().enumerate() {
            let Some(l) = l else { continue };
            for q in (0..w * h).filter(|&q| l[q]) {
                let i = k * plane + to_plane(q);
                if lung_out[i] == 0 {
                    added[side] += 1;
                    lung_out[i] = 1;
                }
                if hu[i] > OPACITY_LOW_HU {
                    out.opacity[i] = 1;
                }
            }
        }
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: [usize; 3] = [10, 64, 64];
    const SPACING: [f64; 3] = [2.5, 1.0, 1.0];

    /// A 16 mm mass at the centre of slices 2-7 of a ring of lung (the right lung, 8..20 mm
    /// from the centre); in slices 5-7 dense "mediastinum" (40 HU) replaces the lung to the
    /// mass's left and touches it, so aerated lung no longer encloses it there. Slices 0-1
    /// and 8-9: a disc of lung, no mass. Returns the HU, the refined masks with the mass in the
    /// lung in slices 2-4 (as the enclosing step leaves them) and those enclosed voxels.
    fn mass_into_the_mediastinum() -> (Vec<f32>, Refined, Vec<u32>) {
        let [slices, rows, cols] = SHAPE;
        let n = slices * rows * cols;
        let (mut hu, mut right) = (vec![40.0f32; n], vec![0u8; n]);
        let mut enclosed = Vec::new();
        for k in 0..slices {
            for r in 0..rows {
                for c in 0..cols {
                    let i = (k * rows + r) * cols + c;
                    let d = ((r as f64 - 32.0).powi(2) + (c as f64 - 32.0).powi(2)).sqrt();
                    let mass = (2..8).contains(&k) && d <= 8.0;
                    let mediastinum = (5..8).contains(&k) && c > 36 && d <= 20.0 && !mass;
                    if mass {
                        hu[i] = 35.0;
                        if k < 5 {
                            right[i] = 1;
                            enclosed.push(i as u32);
                        }
                    } else if d <= 20.0 && !mediastinum {
                        hu[i] = -850.0;
                        right[i] = 1;
                    }
                }
            }
        }
        let empty = vec![0u8; n];
        let out = Refined::of_model(&empty, &right, &empty);
        (hu, out, enclosed)
    }

    #[test]
    fn a_mass_the_lung_encloses_is_followed_where_it_touches_the_mediastinum() {
        let (hu, mut out, enclosed) = mass_into_the_mediastinum();
        let added = follow_enclosed(&mut out, &hu, SHAPE, SPACING, &[Vec::new(), enclosed], false);
        let plane = SHAPE[1] * SHAPE[2];
        let (mut mass, mut mass_in, mut mediastinum_in) = (0, 0, 0);
        for k in 5..8 {
            for p in 0..plane {
                let i = k * plane + p;
                let d = (((p / 64) as f64 - 32.0).powi(2) + ((p % 64) as f64 - 32.0).powi(2)).sqrt();
                if d <= 8.0 {
                    mass += 1;
                    mass_in += usize::from(out.right_lung[i] != 0 && out.opacity[i] != 0);
                } else if hu[i] > 0.0 && out.right_lung[i] != 0 {
                    mediastinum_in += 1;
                    // the growth per slice (GROW_MM, 3 pixels here, square) lets it creep into
                    // tissue of its density, as the model does, and no farther
                    let reach = 8.0 + 3.0 * std::f64::consts::SQRT_2 * (k - 4) as f64;
                    assert!(d <= reach + 0.5, "slice {k}: a voxel {d:.1} mm from the centre taken");
                }
            }
        }
        assert_eq!(mass_in, mass, "the mass in slices 5-7: {mass_in} of {mass} voxels followed");
        assert_eq!(added, [0, mass_in + mediastinum_in]);
        assert!(out.left_lung.iter().all(|&v| v == 0));
    }

    #[test]
    fn a_mass_whose_core_is_already_lung_is_followed_from_the_ring_around_it() {
        // the enclosed part in slices 2-4 is only a 2-pixel ring: the core (6 mm across) was
        // taken as lung by another step
        let (hu, mut out, enclosed) = mass_into_the_mediastinum();
        let plane = SHAPE[1] * SHAPE[2];
        let d = |i: usize| (((i % plane / 64) as f64 - 32.0).powi(2) + ((i % 64) as f64 - 32.0).powi(2)).sqrt();
        let ring: Vec<u32> = enclosed.iter().copied().filter(|&i| d(i as usize) > 6.0).collect();
        assert!(ring.len() < enclosed.len() && !ring.is_empty());
        let mass_in_upper_slices = |out: &Refined| {
            (5 * plane..8 * plane).filter(|&i| d(i) <= 8.0 && out.right_lung[i] != 0 && out.opacity[i] != 0).count()
        };
        let mut without = out.clone();
        follow_enclosed(&mut without, &hu, SHAPE, SPACING, &[Vec::new(), ring.clone()], false);
        assert_eq!(mass_in_upper_slices(&without), 0, "the ring alone is too thin to be a mass");
        follow_enclosed(&mut out, &hu, SHAPE, SPACING, &[Vec::new(), ring], true);
        let mass = (5 * plane..8 * plane).filter(|&i| d(i) <= 8.0).count();
        assert_eq!(mass_in_upper_slices(&out), mass, "with its core, the mass is followed into slices 5-7");
    }

    #[test]
    fn dense_tissue_already_in_the_lung_is_no_path() {
        // the same mass, but the lung already holds a dense layer (a consolidation the
        // pleural-cavity step added) under it in slices 0-1: the mass is not followed through it
        let (mut hu, mut out, enclosed) = mass_into_the_mediastinum();
        let plane = SHAPE[1] * SHAPE[2];
        for (v, &l) in hu.iter_mut().zip(&out.right_lung).take(2 * plane) {
            if l != 0 {
                *v = 30.0;
            }
        }
        let before = out.right_lung.clone();
        follow_enclosed(&mut out, &hu, SHAPE, SPACING, &[Vec::new(), enclosed], false);
        assert_eq!(out.right_lung[..2 * plane], before[..2 * plane]);
        assert!(out.opacity[..2 * plane].iter().all(|&v| v == 0), "nothing below the mass became opacity");
    }

    #[test]
    fn nothing_enclosed_changes_nothing() {
        let (hu, mut out, _) = mass_into_the_mediastinum();
        let before = out.clone();
        assert_eq!(follow_enclosed(&mut out, &hu, SHAPE, SPACING, &[Vec::new(), Vec::new()], false), [0, 0]);
        assert_eq!((out.left_lung, out.right_lung, out.opacity), (before.left_lung, before.right_lung, before.opacity));
    }
}
