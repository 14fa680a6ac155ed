//! Dense disease in and around the lungs: pleural effusion volumes, the indeterminate dense
//! dependent region, and dense focal lesions (connected components of consolidation-density
//! opacity).
//!
//! Components are labelled on runs: each image row's maximal runs of dense voxels are found (the
//! slices split among threads), then a union-find joins each run with the runs of the rows it
//! touches in 26-connectivity (the previous row of its slice and the three neighbouring rows of
//! the previous slice, column ranges touching or diagonal). Only the opacity voxels are visited
//! beyond one pass over the opacity mask, so the cost follows the amount of opacity.

use crate::{Grid, Level, Side};

/// A run of dense voxels in one image row: columns `c0..c1`.
#[derive(Debug, Clone, Copy)]
struct Run {
    row: u32,
    c0: u32,
    c1: u32,
    hu_sum: f64,
    left: u32,
    right: u32,
}

/// The runs of one slice, by row: runs of row `r` are `runs[starts[r]..starts[r + 1]]`.
#[derive(Debug, Default)]
struct SliceRuns {
    runs: Vec<Run>,
    starts: Vec<u32>,
}

/// One connected component of dense opacity.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Component {
    /// Voxels.
    pub voxels: usize,
    /// Sum of their HU.
    pub hu_sum: f64,
    /// Voxels inside the left / right lung mask.
    pub left: usize,
    pub right: usize,
    /// Sum of the slice index over the voxels (centroid slice = k_sum / voxels).
    pub k_sum: f64,
    /// Sum of the column index over the voxels.
    pub c_sum: f64,
    /// Bounding box, inclusive: `[slice, row, col]` minima and maxima.
    pub min: [usize; 3],
    pub max: [usize; 3],
    /// Its runs `(slice, row, c0, c1)` (kept only for components that may be focal).
    pub runs: Vec<(usize, usize, usize, usize)>,
}

/// Every connected component of dense opacity, and the dense voxel count.
#[derive(Debug, Default)]
pub(crate) struct Components {
    pub components: Vec<Component>,
    pub dense_voxels: usize,
}

/// Labels the 26-connected components of `dense(i)` voxels. Inside the lungs (`left`, `right`
/// counted per component). A voxel is a candidate only where `opacity` is set (rows without
/// opacity are skipped with one pass). Components smaller than `min_voxels` keep no runs.
pub(crate) fn label(
    grid: &Grid<'_>,
    opacity: &[u8],
    left: &[u8],
    right: &[u8],
    dense: impl Fn(usize) -> bool + Sync,
    min_voxels: usize,
) -> Components {
    let [slices, rows, cols] = grid.shape;
    if slices == 0 || rows == 0 || cols == 0 {
        return Components::default();
    }
    let plane = rows * cols;
    let slice_runs = |k: usize| -> SliceRuns {
        let mut out = SliceRuns { runs: Vec::new(), starts: Vec::with_capacity(rows + 1) };
        for r in 0..rows {
            out.starts.push(out.runs.len() as u32);
            let base = k * plane + r * cols;
            let line = &opacity[base..base + cols];
            // one vectorisable pass decides whether the row has any opacity
            if line.iter().fold(0u8, |a, &b| a | b) == 0 {
                continue;
            }
            let mut c = 0;
            while c < cols {
                if !(line[c] != 0 && dense(base + c)) {
                    c += 1;
                    continue;
                }
                let c0 = c;
                let mut run = Run { row: r as u32, c0: c0 as u32, c1: 0, hu_sum: 0.0, left: 0, right: 0 };
                while c < cols && line[c] != 0 && dense(base + c) {
                    let i = base + c;
                    run.hu_sum += f64::from(grid.hu[i]);
                    run.left += u32::from(left[i] != 0);
                    run.right += u32::from(right[i] != 0);
                    c += 1;
                }
                run.c1 = c as u32;
                out.runs.push(run);
            }
        }
        out.starts.push(out.runs.len() as u32);
        out
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8).min(slices);
    let per = slices.div_ceil(threads);
    let per_slice: Vec<SliceRuns> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let slice_runs = &slice_runs;
                scope.spawn(move || (t * per..((t + 1) * per).min(slices)).map(slice_runs).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });

    // global run numbers: offset of each slice's first run
    let mut offsets = Vec::with_capacity(slices + 1);
    let mut n = 0usize;
    for s in &per_slice {
        offsets.push(n);
        n += s.runs.len();
    }
    offsets.push(n);
    let mut parent: Vec<u32> = (0..n as u32).collect();
    let touching = |a: &Run, b: &Run| b.c0 <= a.c1 && a.c0 <= b.c1;
    for k in 0..slices {
        let s = &per_slice[k];
        for r in 0..rows {
            let (a0, a1) = (s.starts[r] as usize, s.starts[r + 1] as usize);
            if a0 == a1 {
                continue;
            }
            // neighbour rows already visited: (k, r - 1) and (k - 1, r - 1..=r + 1)
            let mut neighbours: [Option<(usize, usize, usize)>; 4] = [None; 4];
            if r > 0 {
                neighbours[0] = Some((k, s.starts[r - 1] as usize, s.starts[r] as usize));
            }
            if k > 0 {
                let p = &per_slice[k - 1];
                for (j, rr) in (r.saturating_sub(1)..=(r + 1).min(rows - 1)).enumerate() {
                    neighbours[1 + j] = Some((k - 1, p.starts[rr] as usize, p.starts[rr + 1] as usize));
                }
            }
            for ai in a0..a1 {
                let a = &s.runs[ai];
                let ga = offsets[k] + ai;
                for &(nk, b0, b1) in neighbours.iter().flatten() {
                    let runs = &per_slice[nk].runs;
                    for (bi, b) in runs.iter().enumerate().take(b1).skip(b0) {
                        if b.c0 > a.c1 {
                            break;
                        }
                        if touching(a, b) {
                            union(&mut parent, ga, offsets[nk] + bi);
                        }
                    }
                }
            }
        }
    }

    // per-component sums
    let mut index = vec![u32::MAX; n];
    let mut components: Vec<Component> = Vec::new();
    let mut dense_voxels = 0usize;
    for (k, s) in per_slice.iter().enumerate() {
        for (ri, run) in s.runs.iter().enumerate() {
            let root = find(&mut parent, offsets[k] + ri) as usize;
            if index[root] == u32::MAX {
                index[root] = components.len() as u32;
                components.push(Component {
                    voxels: 0,
                    hu_sum: 0.0,
                    left: 0,
                    right: 0,
                    k_sum: 0.0,
                    c_sum: 0.0,
                    min: [usize::MAX; 3],
                    max: [0; 3],
                    runs: Vec::new(),
                });
            }
            let c = &mut components[index[root] as usize];
            let len = (run.c1 - run.c0) as usize;
            let (r, c0, c1) = (run.row as usize, run.c0 as usize, run.c1 as usize);
            dense_voxels += len;
            c.voxels += len;
            c.hu_sum += run.hu_sum;
            c.left += run.left as usize;
            c.right += run.right as usize;
            c.k_sum += (k * len) as f64;
            // sum of c0..c1 = len * (c0 + c1 - 1) / 2
            c.c_sum += len as f64 * (c0 + c1 - 1) as f64 / 2.0;
            c.min = [c.min[0].min(k), c.min[1].min(r), c.min[2].min(c0)];
            c.max = [c.max[0].max(k), c.max[1].max(r), c.max[2].max(c1 - 1)];
        }
    }
    // the runs of the components that are large enough to be reported
    for (k, s) in per_slice.iter().enumerate() {
        for (ri, run) in s.runs.iter().enumerate() {
            let root = find(&mut parent, offsets[k] + ri) as usize;
            let c = &mut components[index[root] as usize];
            if c.voxels >= min_voxels {
                c.runs.push((k, run.row as usize, run.c0 as usize, run.c1 as usize));
            }
        }
    }
    Components { components, dense_voxels }
}

fn find(parent: &mut [u32], mut i: usize) -> u32 {
    while parent[i] as usize != i {
        let p = parent[i] as usize;
        parent[i] = parent[p];
        i = p;
    }
    i as u32
}

fn union(parent: &mut [u32], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        // the smaller root wins: deterministic, and roots stay early runs
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi as usize] = lo;
    }
}

/// The largest in-plane distance across a component's pixels (mm): over its slices, the largest
/// distance between two corners of its pixel squares (the Feret diameter of the pixelated
/// shape), from the convex hull of its runs' end corners.
pub(crate) fn max_inplane_diameter_mm(runs: &[(usize, usize, usize, usize)], spacing_mm: [f64; 3]) -> f64 {
    let mut by_slice: std::collections::BTreeMap<usize, Vec<(f64, f64)>> = std::collections::BTreeMap::new();
    let (sr, sc) = (spacing_mm[1], spacing_mm[2]);
    for &(k, r, c0, c1) in runs {
        let pts = by_slice.entry(k).or_default();
        for (rr, cc) in [(r, c0), (r + 1, c0), (r, c1), (r + 1, c1)] {
            pts.push((rr as f64 * sr, cc as f64 * sc));
        }
    }
    let mut best = 0.0f64;
    for (_, mut pts) in by_slice {
        let hull = convex_hull(&mut pts);
        for i in 0..hull.len() {
            for j in i + 1..hull.len() {
                let (dy, dx) = (hull[i].0 - hull[j].0, hull[i].1 - hull[j].1);
                best = best.max((dy * dy + dx * dx).sqrt());
            }
        }
    }
    best
}

/// Andrew's monotone chain; returns the hull's vertices (collinear points dropped).
fn convex_hull(pts: &mut [(f64, f64)]) -> Vec<(f64, f64)> {
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let cross = |o: (f64, f64), a: (f64, f64), b: (f64, f64)| (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0);
    let mut hull: Vec<(f64, f64)> = Vec::with_capacity(2 * pts.len());
    for &p in pts.iter() {
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
            hull.pop();
        }
        hull.push(p);
    }
    let lower = hull.len() + 1;
    for &p in pts.iter().rev().skip(1) {
        while hull.len() >= lower && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
            hull.pop();
        }
        hull.push(p);
    }
    hull.pop();
    hull
}

/// Voxel count, HU sum and first/last slice of a mask; with `split`, the count per lung (left,
/// right) instead of in total.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct MaskSums {
    pub voxels: usize,
    pub hu_sum: f64,
    pub first: Option<usize>,
    pub last: Option<usize>,
}

/// Counts `mask`'s voxels per slice (voxels where `inside(i)` also holds).
pub(crate) fn mask_sums(grid: &Grid<'_>, mask: &[u8], inside: impl Fn(usize) -> bool) -> MaskSums {
    let plane = grid.shape[1] * grid.shape[2];
    let mut s = MaskSums::default();
    for k in 0..grid.shape[0] {
        let base = k * plane;
        let m = &mask[base..base + plane];
        if m.iter().fold(0u8, |a, &b| a | b) == 0 {
            continue;
        }
        let mut n = 0usize;
        for (j, &v) in m.iter().enumerate() {
            if v != 0 && inside(base + j) {
                n += 1;
                s.hu_sum += f64::from(grid.hu[base + j]);
            }
        }
        if n > 0 {
            s.voxels += n;
            s.first.get_or_insert(k);
            s.last = Some(k);
        }
    }
    s
}

/// The zone of lung `side` (as the findings' zones) that holds slice `k`; a slice outside the
/// lung goes to the nearest end.
pub(crate) fn level_of(zones: &[crate::ZoneFindings], side: Side, k: usize) -> Level {
    let own = || zones.iter().filter(|z| z.side == side);
    if let Some(z) = own().find(|z| z.slices.as_ref().is_some_and(|r| r.contains(&k))) {
        return z.level;
    }
    match own().find(|z| z.level == Level::Lower).and_then(|z| z.slices.clone()) {
        Some(r) if k < r.start => Level::Lower,
        _ => Level::Upper,
    }
}

/// The side of a component: the lung holding most of its voxels; without any, the side of the
/// midline its mean column lies on (columns run patient right -> left).
pub(crate) fn side_of(c: &Component, cols: usize) -> Side {
    if c.left + c.right > 0 {
        if c.left > c.right {
            Side::Left
        } else {
            Side::Right
        }
    } else if c.c_sum / c.voxels.max(1) as f64 >= cols as f64 / 2.0 {
        Side::Left
    } else {
        Side::Right
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(hu: &[f32], shape: [usize; 3]) -> Grid<'_> {
        Grid { hu, shape, spacing_mm: [1.0, 1.0, 1.0] }
    }

    /// Flood fill with 26-connectivity, written independently of the run labelling.
    fn flood_sizes(mask: &[u8], shape: [usize; 3]) -> Vec<usize> {
        let [s, r, c] = shape;
        let mut seen = vec![false; mask.len()];
        let mut sizes = Vec::new();
        for start in 0..mask.len() {
            if mask[start] == 0 || seen[start] {
                continue;
            }
            seen[start] = true;
            let mut stack = vec![start];
            let mut n = 0;
            while let Some(i) = stack.pop() {
                n += 1;
                let (k, rr, cc) = ((i / (r * c)) as i64, ((i / c) % r) as i64, (i % c) as i64);
                for dk in -1..=1 {
                    for dr in -1..=1 {
                        for dc in -1..=1 {
                            let (a, b, d) = (k + dk, rr + dr, cc + dc);
                            if a < 0 || b < 0 || d < 0 || a >= s as i64 || b >= r as i64 || d >= c as i64 {
                                continue;
                            }
                            let j = (a as usize * r + b as usize) * c + d as usize;
                            if mask[j] != 0 && !seen[j] {
                                seen[j] = true;
                                stack.push(j);
                            }
                        }
                    }
                }
            }
            sizes.push(n);
        }
        sizes.sort_unstable();
        sizes
    }

    #[test]
    fn run_labelling_equals_a_flood_fill() {
        // a pseudo-random sparse mask: many diagonal-only contacts
        let shape = [9, 17, 23];
        let n: usize = shape.iter().product();
        let mut state = 12345u64;
        let mask: Vec<u8> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                u8::from((state >> 33) % 100 < 22)
            })
            .collect();
        let hu = vec![0.0f32; n];
        let zero = vec![0u8; n];
        let got = label(&grid(&hu, shape), &mask, &zero, &zero, |_| true, 1);
        let mut sizes: Vec<usize> = got.components.iter().map(|c| c.voxels).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, flood_sizes(&mask, shape));
        assert_eq!(got.dense_voxels, mask.iter().filter(|&&v| v != 0).count());
        let runs: usize = got.components.iter().map(|c| c.runs.iter().map(|r| r.3 - r.2).sum::<usize>()).sum();
        assert_eq!(runs, got.dense_voxels);
    }

    #[test]
    fn diameter_of_a_square_and_a_disc() {
        // a 10 x 10 pixel square at 0.5 mm: diagonal of 5 x 5 mm
        let runs: Vec<_> = (0..10).map(|r| (0, r, 3, 13)).collect();
        let d = max_inplane_diameter_mm(&runs, [1.0, 0.5, 0.5]);
        assert!((d - 50f64.sqrt()).abs() < 1e-9, "{d}");
        // a disc of radius 10 px at 1 mm: about 20 mm (pixelated)
        let mut runs = Vec::new();
        for r in 0..21usize {
            let dy = r as f64 - 10.0;
            let half = (100.0 - dy * dy).sqrt().floor() as usize;
            runs.push((4, r, 10 - half, 10 + half + 1));
        }
        let d = max_inplane_diameter_mm(&runs, [1.0, 1.0, 1.0]);
        assert!((20.0..23.0).contains(&d), "{d}");
    }
}
