//! Gas outside the lung that a lung mask took in: the stomach's bubble under the left dome, bowel
//! gas, gas beside the oesophagus. Taken out of the masks before anything is measured (the
//! manifest's `[pipeline] trim = "gas"`).
//!
//! A part of a slice's lung mask (4-connected in-plane) is gas when
//! - its median HU is below [`GAS_HU`] (aerated lung is -700 to -900 HU; gas about -1000), and
//! - the ring of [`RING_PIXELS`] pixels around it holds less than [`MAX_AERATED_RING`] aerated lung
//!   (-950 < HU <= -400): a bubble is wrapped in the stomach wall and abdominal tissue, while a
//!   bulla or a cluster of emphysema that a slice shows apart from the rest of the lung is wrapped
//!   in lung parenchyma behind its thin wall.
//!
//! The rule cannot tell gas from a bulla that lies against the chest wall or the diaphragm with no
//! lung around it in that slice; such a bulla is left out of the lung (README limits).

/// Median HU below which a part is gas, not lung parenchyma (as in the pleural-cavity step).
pub const GAS_HU: f32 = crate::cavity::GAS_HU;
/// Width of the ring around a part that is looked at (pixels, Chebyshev distance).
pub const RING_PIXELS: usize = 3;
/// Largest share of aerated lung in the ring of a part that is gas.
pub const MAX_AERATED_RING: f64 = 0.2;
/// Aerated lung, for the ring: -950 < HU <= this.
const AERATED_MAX_HU: f32 = -400.0;

/// What [`trim_gas`] took out.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct GasTrimmed {
    /// Voxels taken out of each mask, in the order given.
    pub voxels: [usize; 2],
}

/// Takes the gas parts (module doc) out of both masks, slice by slice. `hu` and the masks are
/// `[slices, rows, cols]` (`shape`), non-zero inside; a mask of another size is left as it is.
pub fn trim_gas(hu: &[f32], shape: [usize; 3], masks: [&mut Vec<u8>; 2]) -> GasTrimmed {
    let [slices, rows, cols] = shape;
    let plane = rows * cols;
    let mut trimmed = GasTrimmed::default();
    for (m, mask) in masks.into_iter().enumerate() {
        if mask.len() != hu.len() || hu.len() != slices * plane {
            continue;
        }
        // the slices are independent: shared among the cores
        let taken = crate::cavity::per_slice_mut(mask, plane, |k, slice| {
            trim_slice(&hu[k * plane..(k + 1) * plane], slice, rows, cols)
        });
        trimmed.voxels[m] = taken.into_iter().sum();
    }
    trimmed
}

/// One slice: returns the pixels taken out.
fn trim_slice(hu: &[f32], mask: &mut [u8], rows: usize, cols: usize) -> usize {
    let mut gas = Vec::new();
    for_each_part(mask, rows, cols, |part| {
        if median_below_gas(hu, part) && ring_aerated_share(hu, part, rows, cols) < MAX_AERATED_RING {
            gas.extend_from_slice(part);
        }
    });
    for &p in &gas {
        mask[p] = 0;
    }
    gas.len()
}

/// Whether the median HU of `part` is below [`GAS_HU`]. The median is the value at index
/// `len / 2` once sorted ([`crate::cavity::median`]), so it is below exactly when more than
/// `len / 2` values are: counted in one pass, without a copy (sorted only when a value is NaN,
/// which has no place in that order).
pub(crate) fn median_below_gas(hu: &[f32], part: &[usize]) -> bool {
    let mut below = 0usize;
    for &p in part {
        let v = hu[p];
        if v.is_nan() {
            let mut values: Vec<f32> = part.iter().map(|&p| hu[p]).collect();
            return crate::cavity::median(&mut values).is_some_and(|m| m < GAS_HU);
        }
        below += usize::from(v < GAS_HU);
    }
    below > part.len() / 2
}

/// Calls `f` with the pixel offsets of each 4-connected part of a slice's `mask`
/// (`[rows, cols]`, non-zero inside), the parts in the order of their first pixel (row-major),
/// each part's pixels row by row.
///
/// Labelled by runs: each row's runs of inside pixels, joined (union-find) with the runs of the
/// row above whose columns they share; one pass over the slice, no per-pixel search.
pub(crate) fn for_each_part(mask: &[u8], rows: usize, cols: usize, mut f: impl FnMut(&[usize])) {
    // each run: (its row's first pixel, first column, one past its last column);
    // `row_runs[r]..row_runs[r + 1]` are row r's
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    let mut row_runs = Vec::with_capacity(rows + 1);
    for r in 0..rows.min(mask.len() / cols.max(1)) {
        row_runs.push(runs.len());
        let line = &mask[r * cols..(r + 1) * cols];
        let mut c = 0;
        while let Some(start) = line[c..].iter().position(|&v| v != 0).map(|o| c + o) {
            let end = line[start..].iter().position(|&v| v == 0).map_or(cols, |o| start + o);
            runs.push((r * cols, start, end));
            c = end;
        }
    }
    row_runs.push(runs.len());
    if runs.is_empty() {
        return;
    }
    // union-find over the runs; a set's root is its first run (the lower index wins)
    let mut parent: Vec<usize> = (0..runs.len()).collect();
    let find = |parent: &mut Vec<usize>, mut x: usize| {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    };
    for r in 1..row_runs.len() - 1 {
        let (mut a, mut b) = (row_runs[r - 1], row_runs[r]);
        while a < row_runs[r] && b < row_runs[r + 1] {
            // the columns of the run above and of this row's run, [start, end)
            let ((_, s1, e1), (_, s2, e2)) = (runs[a], runs[b]);
            if s1 < e2 && s2 < e1 {
                let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                if ra != rb {
                    let (lo, hi) = (ra.min(rb), ra.max(rb));
                    parent[hi] = lo;
                }
            }
            if e1 < e2 {
                a += 1;
            } else {
                b += 1;
            }
        }
    }
    // the parts in the order of their roots (= of their first pixel), pixels run by run
    let roots: Vec<usize> = (0..runs.len()).map(|i| find(&mut parent, i)).collect();
    let mut part_of = vec![usize::MAX; runs.len()];
    let mut sizes = Vec::new();
    for (i, &root) in roots.iter().enumerate() {
        if root == i {
            part_of[i] = sizes.len();
            sizes.push(0);
        }
        sizes[part_of[root]] += runs[i].2 - runs[i].1;
    }
    let mut offsets = Vec::with_capacity(sizes.len() + 1);
    offsets.push(0);
    for s in &sizes {
        offsets.push(offsets[offsets.len() - 1] + s);
    }
    let mut fill = offsets.clone();
    let mut pixels = vec![0usize; offsets[sizes.len()]];
    for (i, &root) in roots.iter().enumerate() {
        let part = part_of[root];
        let (row, start, end) = runs[i];
        for (slot, p) in pixels[fill[part]..].iter_mut().zip(row + start..row + end) {
            *slot = p;
        }
        fill[part] += end - start;
    }
    for part in 0..sizes.len() {
        f(&pixels[offsets[part]..offsets[part + 1]]);
    }
}

/// Share of aerated lung among the pixels within [`RING_PIXELS`] of `part` (not in it).
fn ring_aerated_share(hu: &[f32], part: &[usize], rows: usize, cols: usize) -> f64 {
    let (mut r0, mut r1, mut c0, mut c1) = (usize::MAX, 0, usize::MAX, 0);
    for &p in part {
        let (r, c) = (p / cols, p % cols);
        (r0, r1, c0, c1) = (r0.min(r), r1.max(r), c0.min(c), c1.max(c));
    }
    let (r0, c0) = (r0.saturating_sub(RING_PIXELS), c0.saturating_sub(RING_PIXELS));
    let (r1, c1) = ((r1 + RING_PIXELS).min(rows - 1), (c1 + RING_PIXELS).min(cols - 1));
    let (h, w) = (r1 - r0 + 1, c1 - c0 + 1);
    // the part and its Chebyshev dilation inside the box
    let mut inside = vec![false; h * w];
    for &p in part {
        inside[(p / cols - r0) * w + (p % cols - c0)] = true;
    }
    let mut near = vec![false; h * w];
    for r in 0..h {
        for c in 0..w {
            if inside[r * w + c] {
                for rr in r.saturating_sub(RING_PIXELS)..=(r + RING_PIXELS).min(h - 1) {
                    for cc in c.saturating_sub(RING_PIXELS)..=(c + RING_PIXELS).min(w - 1) {
                        near[rr * w + cc] = true;
                    }
                }
            }
        }
    }
    let (mut ring, mut aerated) = (0usize, 0usize);
    for r in 0..h {
        for c in 0..w {
            if near[r * w + c] && !inside[r * w + c] {
                ring += 1;
                let v = hu[(r0 + r) * cols + c0 + c];
                aerated += usize::from(v > GAS_HU && v <= AERATED_MAX_HU);
            }
        }
    }
    if ring == 0 {
        0.0
    } else {
        aerated as f64 / ring as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counted_median_test_agrees_with_the_median() {
        // odd and even parts, values on both sides of GAS_HU and on it (the median at index
        // len / 2 of the sorted values, as `median` takes it)
        let hu: Vec<f32> = (0..64).map(|i| [-1000.0, GAS_HU, -990.0, -800.0, -951.0, -949.0, 40.0][i % 7]).collect();
        for len in 0..64 {
            for start in 0..(64 - len).min(8) {
                let part: Vec<usize> = (start..start + len).collect();
                let mut values: Vec<f32> = part.iter().map(|&p| hu[p]).collect();
                let expected = crate::cavity::median(&mut values).is_some_and(|m| m < GAS_HU);
                assert_eq!(median_below_gas(&hu, &part), expected, "part {start}..{}", start + len);
            }
        }
        // exactly half below: the median is the upper one, not below
        assert!(!median_below_gas(&[-1000.0, -500.0], &[0, 1]));
        assert!(median_below_gas(&[-1000.0, -990.0, -500.0], &[0, 1, 2]));
    }

    /// The 4-connected parts by a flood fill from each pixel in turn: the parts `for_each_part`
    /// must give, in the same order, as sets of pixels.
    fn parts_by_flood_fill(mask: &[u8], rows: usize, cols: usize) -> Vec<Vec<usize>> {
        let mut seen = vec![false; mask.len()];
        let mut parts = Vec::new();
        for start in 0..mask.len() {
            if mask[start] == 0 || seen[start] {
                continue;
            }
            let (mut part, mut stack) = (Vec::new(), vec![start]);
            seen[start] = true;
            while let Some(p) = stack.pop() {
                part.push(p);
                for q in crate::cavity::neighbours4(p, rows, cols) {
                    if mask[q] != 0 && !seen[q] {
                        seen[q] = true;
                        stack.push(q);
                    }
                }
            }
            part.sort_unstable();
            parts.push(part);
        }
        parts
    }

    #[test]
    fn parts_by_runs_are_the_parts_of_a_flood_fill() {
        // random masks of several densities and shapes (U shapes, spirals and diagonals among
        // what chance makes), from a fixed linear congruential sequence
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u32
        };
        for (rows, cols) in [(1, 1), (1, 17), (17, 1), (9, 13), (40, 40), (64, 23)] {
            for density in [0, 20, 45, 55, 70, 100] {
                let mask: Vec<u8> = (0..rows * cols).map(|_| u8::from(next() % 100 < density)).collect();
                let mut found = Vec::new();
                for_each_part(&mask, rows, cols, |part| {
                    assert!(part.windows(2).all(|w| w[0] < w[1]), "pixels row by row");
                    found.push(part.to_vec());
                });
                assert_eq!(found, parts_by_flood_fill(&mask, rows, cols), "{rows} x {cols}, {density} %");
            }
        }
    }

    /// One 40 x 40 slice of soft tissue (40 HU) holding `lung` (-850 HU) and `gas` (-1000 HU)
    /// discs, all in the mask.
    fn slice(discs: &[((f64, f64), f64, f32)]) -> (Vec<f32>, Vec<u8>) {
        let mut hu = vec![40.0f32; 1600];
        let mut mask = vec![0u8; 1600];
        for &((cr, cc), radius, value) in discs {
            for r in 0..40 {
                for c in 0..40 {
                    if (r as f64 - cr).hypot(c as f64 - cc) <= radius {
                        hu[r * 40 + c] = value;
                        mask[r * 40 + c] = 1;
                    }
                }
            }
        }
        (hu, mask)
    }

    #[test]
    fn a_bubble_in_tissue_goes_a_bulla_in_lung_stays() {
        // a gas bubble apart from the lung, in tissue: taken out; the lung stays
        let (hu, mut mask) = slice(&[((10.0, 10.0), 6.0, -850.0), ((28.0, 28.0), 5.0, -1000.0)]);
        let lung_pixels = mask.iter().filter(|&&v| v != 0).count();
        let mut other = vec![0u8; 1600];
        let t = trim_gas(&hu, [1, 40, 40], [&mut mask, &mut other]);
        assert!(t.voxels[0] > 60, "{t:?}");
        assert_eq!(mask[28 * 40 + 28], 0);
        assert_eq!(mask[10 * 40 + 10], 1);
        assert_eq!(mask.iter().filter(|&&v| v != 0).count(), lung_pixels - t.voxels[0]);
        // a bulla behind a 1-pixel wall inside a lung: its own part of the mask, kept
        let (mut hu, _) = slice(&[((20.0, 20.0), 14.0, -850.0)]);
        let mut mask: Vec<u8> = hu.iter().map(|&v| u8::from(v < -500.0)).collect();
        for r in 0..40 {
            for c in 0..40 {
                let d = (r as f64 - 20.0).hypot(c as f64 - 20.0);
                if d <= 5.0 {
                    hu[r * 40 + c] = -1000.0;
                } else if d <= 6.0 {
                    hu[r * 40 + c] = 40.0;
                    mask[r * 40 + c] = 0;
                }
            }
        }
        let before = mask.clone();
        let t = trim_gas(&hu, [1, 40, 40], [&mut mask, &mut other]);
        assert_eq!((t.voxels, mask == before), ([0, 0], true));
    }
}
