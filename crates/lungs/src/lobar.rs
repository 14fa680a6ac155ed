//! A consolidation followed through its air bronchograms: the part of a consolidated lobe that
//! the walks of [`crate::cavity`] do not reach.
//!
//! The walks fill a dependent layer only up to [`crate::cavity::MAX_DEPTH_MM`] from the
//! aerated lung's edge to the ribs (deeper, a line is as likely to have crossed the liver or the
//! spleen) and start no walk in a slice where the lung holds no aerated part. A lower lobe
//! consolidated from the wall to the hilum is both: its posterior part lies deeper than that,
//! and its base holds no air at all. What tells such a lobe from the liver or spleen under it
//! is what tells any consolidation from an organ: its air bronchograms, the bronchi that stay
//! aerated inside airless lung (Fleischner Society glossary, Hansell et al., Radiology
//! 2008;246:697-722, "air bronchogram"). No organ under the diaphragm holds branching air.
//!
//! So a region the walks found and called consolidation (it holds air bronchograms) is grown
//! in 3-D into the tissue it continues into, where
//! - that tissue lies no farther than [`BRONCHOGRAM_REACH_MM`] along it from an air bronchogram
//!   the region holds or reaches (a bronchogram reached is a new origin of the reach): air
//!   (below -400 HU) whose in-plane connected part is no larger than
//!   [`MAX_BRONCHOGRAM_AREA_MM2`] (a bronchus seen across or along its course, not the aerated
//!   lung, the stomach's bubble or air outside the body);
//! - its in-plane 5 x 5 median HU lies within [`crate::cavity::CARRY_HU_TOLERANCE`] of the
//!   region's own median (the band the carry into the recess uses: an unenhanced liver is
//!   usually denser than consolidation);
//! - it is not bone, fat, the other lung, an effusion, or within
//!   [`crate::cavity::MEDIAL_EXCLUSION_MM`] of the midline, and it is not beyond the rib cage:
//!   bone closed in-plane with a disc of [`WALL_CLOSING_MM`] and thickened by
//!   [`WALL_THICKENING_MM`] is a wall (the intercostal spaces an axial slice shows between two
//!   ribs are closed; behind them lie the chest wall's muscles, of the consolidation's density).
//!
//! What it cannot do (measured in the model README, 0.2.3): consolidation without visible air
//! bronchograms (bronchi filled with secretions, atelectasis, bronchi averaged above -400 HU on
//! thick slices) is not grown; tissue of the region's density within the reach of a bronchogram
//! next to the lobe (the diaphragm, an unenhanced spleen, the heart's wall, the aorta, stomach
//! content with gas bubbles) is taken in with it; a lobe's part farther than the reach from every
//! visible bronchus is left to the walks.

use crate::cavity::{median_around, Bits, Refined, BONE_HU, CARRY_HU_TOLERANCE, FAT_HU, MEDIAL_EXCLUSION_MM};

/// How far from an air bronchogram consolidated lung is taken (mm): about the spacing of the
/// subsegmental bronchi that stay visible in a consolidated lobe.
pub const BRONCHOGRAM_REACH_MM: f64 = 20.0;
/// Radius of the in-plane closing that joins the ribs into a wall (mm): intercostal spaces seen
/// on an axial slice are up to twice as wide.
pub const WALL_CLOSING_MM: f64 = 25.0;
/// The wall also holds what lies within this distance of bone (mm): the closing leaves only a
/// thin line across a wide gap, which a path along the pixel grid can slip through.
pub const WALL_THICKENING_MM: f64 = 4.0;
/// Largest in-plane area of one connected part of air that is an air bronchogram (mm^2): a
/// bronchus 3 mm across seen over 60 mm of its course.
pub const MAX_BRONCHOGRAM_AREA_MM2: f64 = 200.0;

const AIR_HU: f32 = -400.0;
const OPACITY_LOW_HU: f32 = -700.0;

/// A region the walks called consolidation, to be followed.
pub(crate) struct Seed {
    /// 0 left, 1 right.
    pub side: usize,
    /// Its voxels (indices into the volume).
    pub voxels: Vec<u32>,
    /// Median HU of its soft-tissue part.
    pub median_hu: f32,
    /// Its index in `Refined::regions`.
    pub region: usize,
}

/// Grows each seed as the module says; the grown voxels become lung (and opacity above
/// -700 HU) of the seed's side, and count to its region. `mid` is the midline column per slice.
pub(crate) fn follow_bronchograms(
    out: &mut Refined,
    hu: &[f32],
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    mid: &[f64],
    seeds: &[Seed],
) {
    if seeds.is_empty() {
        return;
    }
    let [slices, rows, cols] = shape;
    let plane = rows * cols;
    // the box: every slice up to the highest seed voxel plus the reach; in-plane, the lungs'
    // extent plus the reach
    let reach_slices = (BRONCHOGRAM_REACH_MM / spacing_mm[0]).ceil() as usize;
    let top = seeds.iter().flat_map(|s| &s.voxels).map(|&i| i as usize / plane).max().unwrap_or(0);
    let k1 = (top + reach_slices).min(slices - 1);
    let lung_pixels = (0..=k1).flat_map(|k| {
        let (l, r) = (&out.left_lung, &out.right_lung);
        (0..plane).filter(move |&p| l[k * plane + p] != 0 || r[k * plane + p] != 0)
    });
    let Some((r0, r1, c0, c1)) = crate::cavity::pixel_box(lung_pixels, cols) else { return };
    let pad = [
        (BRONCHOGRAM_REACH_MM / spacing_mm[1]).ceil() as usize,
        (BRONCHOGRAM_REACH_MM / spacing_mm[2]).ceil() as usize,
    ];
    let (r0, r1) = (r0.saturating_sub(pad[0]), (r1 + pad[0]).min(rows - 1));
    let (c0, c1) = (c0.saturating_sub(pad[1]), (c1 + pad[1]).min(cols - 1));
    let dims = [k1 + 1, r1 - r0 + 1, c1 - c0 + 1];
    let at = |i: usize| -> Option<usize> {
        let (k, r, c) = (i / plane, (i % plane) / cols, i % cols);
        (k <= k1 && (r0..=r1).contains(&r) && (c0..=c1).contains(&c)).then(|| (k * dims[1] + r - r0) * dims[2] + c - c0)
    };
    // the air bronchograms
    let pixel_mm2 = spacing_mm[1] * spacing_mm[2];
    let mut bronchogram = vec![false; dims.iter().product()];
    for k in 0..=k1 {
        let slice = &hu[k * plane..(k + 1) * plane];
        small_air_parts(slice, [rows, cols], (r0, r1, c0, c1), MAX_BRONCHOGRAM_AREA_MM2 / pixel_mm2, |p| {
            if let Some(b) = at(k * plane + p) {
                bronchogram[b] = true;
            }
        });
    }
    // the rib cage as a wall: bone closed in-plane over the intercostal spaces
    let wall = closed_bone(hu, shape, spacing_mm, dims, (r0, c0));

    let window = std::cell::RefCell::new(Vec::with_capacity(25));
    let voxel_ml = spacing_mm.iter().product::<f64>() / 1000.0;
    for seed in seeds {
        let (this, that) =
            if seed.side == 0 { (&out.left_lung, &out.right_lung) } else { (&out.right_lung, &out.left_lung) };
        let mut own = Bits::new(hu.len());
        for &i in &seed.voxels {
            own.set(i as usize);
        }
        // tissue the region may continue into (bronchograms included); its own voxels pass, but
        // for those on the wall
        let passable = |i: usize, b: usize| -> bool {
            // (where the walks' fill reached into a gap between two ribs, the wall cuts it)
            if wall[b] {
                return false;
            }
            if own.get(i) {
                return true;
            }
            if this[i] != 0 || that[i] != 0 || out.effusion_left[i] != 0 || out.effusion_right[i] != 0 {
                return false;
            }
            let (k, p) = (i / plane, i % plane);
            let from_mid = ((p % cols) as f64 - mid[k]).abs();
            if from_mid * spacing_mm[2] < MEDIAL_EXCLUSION_MM {
                return false;
            }
            if bronchogram[b] {
                return true;
            }
            let v = hu[i];
            if !(AIR_HU..BONE_HU).contains(&v) || (FAT_HU[0]..=FAT_HU[1]).contains(&v) {
                return false;
            }
            let m = median_around(&hu[k * plane..(k + 1) * plane], [rows, cols], p, &mut window.borrow_mut());
            (m - seed.median_hu).abs() <= CARRY_HU_TOLERANCE
        };
        let grown = reach(&seed.voxels, &own, &bronchogram, &passable, shape, spacing_mm, &at);
        let lung_out = if seed.side == 0 { &mut out.left_lung } else { &mut out.right_lung };
        for &i in &grown {
            lung_out[i as usize] = 1;
            if hu[i as usize] > OPACITY_LOW_HU {
                out.opacity[i as usize] = 1;
            }
        }
        if let Some(region) = out.regions.get_mut(seed.region) {
            region.volume_ml += grown.len() as f64 * voxel_ml;
            region.added_ml += grown.len() as f64 * voxel_ml;
            region.followed_ml += grown.len() as f64 * voxel_ml;
            let ks = grown.iter().map(|&i| i as usize / plane);
            region.slices = (
                ks.clone().min().map_or(region.slices.0, |k| k.min(region.slices.0)),
                ks.max().map_or(region.slices.1, |k| k.max(region.slices.1)),
            );
        }
    }
}

/// The voxels (not the seed's own) within [`BRONCHOGRAM_REACH_MM`] of an air bronchogram along
/// a path through `passable` voxels, the distance counted from the bronchograms the seed holds
/// or touches and from every bronchogram so reached (Dijkstra over the 6 face neighbours, steps
/// weighted by the spacing): the region follows its bronchi, and tissue farther than the reach
/// from every bronchogram it reached, or beyond a wall, is not taken. `at` maps a voxel to its
/// index in the box of `bronchogram` (`None` outside it).
fn reach(
    seed: &[u32],
    own: &Bits,
    bronchogram: &[bool],
    passable: &dyn Fn(usize, usize) -> bool,
    [slices, rows, cols]: [usize; 3],
    spacing_mm: [f64; 3],
    at: &dyn Fn(usize) -> Option<usize>,
) -> Vec<u32> {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, HashMap};
    let plane = rows * cols;
    let neighbours = |i: usize| {
        let (k, r, c) = (i / plane, (i % plane) / cols, i % cols);
        [
            (k > 0).then(|| (i - plane, spacing_mm[0])),
            (k + 1 < slices).then(|| (i + plane, spacing_mm[0])),
            (r > 0).then(|| (i - cols, spacing_mm[1])),
            (r + 1 < rows).then(|| (i + cols, spacing_mm[1])),
            (c > 0).then(|| (i - 1, spacing_mm[2])),
            (c + 1 < cols).then(|| (i + 1, spacing_mm[2])),
        ]
    };
    // distances in micrometres, so that the heap orders integers
    let limit = (BRONCHOGRAM_REACH_MM * 1000.0) as u64;
    let mut best: HashMap<usize, u64> = HashMap::new();
    let mut heap = BinaryHeap::new();
    for &i in seed {
        let i = i as usize;
        for j in std::iter::once(i).chain(neighbours(i).into_iter().flatten().map(|(j, _)| j)) {
            if at(j).is_some_and(|b| bronchogram[b] && passable(j, b)) && !best.contains_key(&j) {
                best.insert(j, 0);
                heap.push(Reverse((0u64, j)));
            }
        }
    }
    while let Some(Reverse((d, i))) = heap.pop() {
        if best.get(&i).is_some_and(|&b| b < d) {
            continue;
        }
        for (j, step) in neighbours(i).into_iter().flatten() {
            let Some(b) = at(j) else { continue };
            // a bronchogram reached is a new origin of the reach
            let dj = if bronchogram[b] { 0 } else { d + (step * 1000.0) as u64 };
            if dj > limit || best.get(&j).is_some_and(|&known| known <= dj) || !passable(j, b) {
                continue;
            }
            best.insert(j, dj);
            heap.push(Reverse((dj, j)));
        }
    }
    let mut grown: Vec<u32> = best.into_keys().filter(|&i| !own.get(i)).map(|i| i as u32).collect();
    grown.sort_unstable();
    grown
}

/// Per voxel of the box `dims` (`[slices, rows, cols]`, its first row and column `(r0, c0)` of
/// the volume `[_, rows, cols]`): bone (>= [`BONE_HU`]) closed in-plane with a disc of
/// [`WALL_CLOSING_MM`] and thickened by [`WALL_THICKENING_MM`]: the ribs with the intercostal
/// spaces between them, a wall the region does not cross into the chest wall's muscles.
fn closed_bone(
    hu: &[f32],
    [_, rows, cols]: [usize; 3],
    spacing_mm: [f64; 3],
    dims: [usize; 3],
    (r0, c0): (usize, usize),
) -> Vec<bool> {
    let [_, h, w] = dims;
    let plane = rows * cols;
    let r2 = WALL_CLOSING_MM * WALL_CLOSING_MM;
    let pixel = [spacing_mm[1], spacing_mm[2]];
    let mut wall = vec![false; dims.iter().product()];
    // slice by slice, shared among the cores
    crate::cavity::per_slice_mut(&mut wall, h * w, |k, slice| {
        let bone: Vec<bool> = (0..h * w).map(|q| hu[k * plane + (q / w + r0) * cols + q % w + c0] >= BONE_HU).collect();
        let to_bone = crate::distance::squared(&bone, &[h, w], &pixel);
        let outside: Vec<bool> = to_bone.iter().map(|&d| d > r2).collect();
        let closed = crate::distance::squared(&outside, &[h, w], &pixel);
        for (q, (d, b)) in closed.into_iter().zip(to_bone).enumerate() {
            slice[q] = d > r2 || b <= WALL_THICKENING_MM * WALL_THICKENING_MM;
        }
    });
    wall
}

/// Calls `each` with every pixel (index within the slice, `[rows, cols]`) of the in-plane
/// 4-connected parts of air (below -400 HU) inside the box `(r0, r1, c0, c1)` that hold at most
/// `max_pixels` pixels and do not touch the box's edge (air outside the body, or cut by the box).
fn small_air_parts(
    slice: &[f32],
    [_, cols]: [usize; 2],
    (r0, r1, c0, c1): (usize, usize, usize, usize),
    max_pixels: f64,
    mut each: impl FnMut(usize),
) {
    let (h, w) = (r1 - r0 + 1, c1 - c0 + 1);
    let pixel = |q: usize| (q / w + r0) * cols + q % w + c0;
    let mut seen = vec![false; w * h];
    let (mut part, mut stack) = (Vec::new(), Vec::new());
    for start in 0..w * h {
        if seen[start] || slice[pixel(start)] >= AIR_HU {
            continue;
        }
        part.clear();
        let mut at_edge = false;
        seen[start] = true;
        stack.push(start);
        while let Some(q) = stack.pop() {
            part.push(q);
            let (y, x) = (q / w, q % w);
            at_edge |= y == 0 || x == 0 || y + 1 == h || x + 1 == w;
            for n in crate::cavity::neighbours4(q, h, w) {
                if !seen[n] && slice[pixel(n)] < AIR_HU {
                    seen[n] = true;
                    stack.push(n);
                }
            }
        }
        if !at_edge && part.len() as f64 <= max_pixels {
            part.iter().for_each(|&q| each(pixel(q)));
        }
    }
}
