//! The severe COVID-19 pattern written into the real sample CT: dependent consolidation along the
//! posterior chest wall of the lower half of the lungs, with air bronchograms and a band of ground
//! glass in front of it; the truth is exactly the voxels changed.
//!
//! The sample (`crate::sample_series("")`): The Cancer Imaging Archive (TCIA), collection
//! Lung-PET-CT-Dx, subject Lung_Dx-A0002, doi:10.7937/TCIA.2020.NNC20461, licence CC BY 4.0 (see
//! data/ct/README.md and data/ct/LICENSE-Lung-PET-CT-Dx.txt; attribution is required).
//!
//! No model is used: the aerated lung of the original is found by thresholding (HU < -400), air
//! connected to the image border in each slice is outside the body, small air regions near the
//! midline in a slice are the trachea / main bronchi, and the largest remaining 3-D air components
//! (at least 50 mm deep, so not the table's air core) are the lungs, split left / right at the
//! body's midline column.
//!
//! Layout: HU `f32`, row-major `[slices, rows, cols]`; axis 0 inferior -> superior, axis 1
//! anterior -> posterior, axis 2 patient right -> left.

use crate::phantom::{Frame, Rng, Segment, Side, Smooth};

/// Default consolidation depth, mm: with [`DEFAULT_GROUND_GLASS_MM`] the bilateral pattern is
/// about 22 % of the sample's aerated lung (the severe case the issue reports).
pub const DEFAULT_DEPTH_MM: f64 = 30.0;
/// Default ground glass in front of the consolidation, mm.
pub const DEFAULT_GROUND_GLASS_MM: f64 = 12.0;

/// Below this HU a voxel inside the body is aerated lung (or other air).
const AIR_HU: f32 = -400.0;

/// The modified volume and its truth. Arrays of two are `[left, right]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Inserted {
    /// HU, same layout as the input.
    pub hu: Vec<f32>,
    /// Voxels set to consolidation (+20..+50 HU), per side.
    pub consolidation: [usize; 2],
    /// Voxels set to ground glass (-600..-450 HU), per side.
    pub ground_glass: [usize; 2],
    /// Voxels of the consolidation layer left as they were (aerated lung, < -400 HU) as air
    /// bronchograms, per side: neither changed nor opacity.
    pub bronchogram: [usize; 2],
    /// Voxels inside the layer (between its lung voxels along a column) that were not aerated
    /// lung and were left as they were: vessels, bronchial walls, partial volume. A measurement
    /// of the dense lung will likely count them too; they are not in the truth.
    pub enclosed: [usize; 2],
    /// Aerated lung (< -400 HU) of the original found per side: the denominator of the
    /// percentages (vessels, the sample's tumour and any other dense lung are not in it).
    pub aerated_lung: [usize; 2],
    /// 1 = consolidation, 2 = ground glass, 0 = unchanged (bronchograms included).
    pub changed_mask: Vec<u8>,
    /// 1 = left aerated lung, 2 = right aerated lung of the original, 0 = anything else.
    pub lung_mask: Vec<u8>,
    /// The column splitting left (higher columns) from right.
    pub midline_col: usize,
    /// Gaussian noise sigma added to the written voxels, HU: the image's own, estimated in soft
    /// tissue.
    pub noise_sigma_hu: f32,
    /// Volume of one voxel, mL.
    pub voxel_ml: f64,
}

impl Inserted {
    /// Opacity voxels (consolidation + ground glass) of `side`.
    pub fn opacity(&self, side: Side) -> usize {
        self.consolidation[side.index()] + self.ground_glass[side.index()]
    }

    /// Opacity as a percentage of the aerated lung of `side` in the original.
    pub fn percent_of_lung(&self, side: Side) -> f64 {
        100.0 * self.opacity(side) as f64 / self.aerated_lung[side.index()].max(1) as f64
    }

    /// Opacity of both sides as a percentage of both lungs' aerated volume in the original.
    pub fn percent_of_both_lungs(&self) -> f64 {
        let opacity = self.opacity(Side::Left) + self.opacity(Side::Right);
        100.0 * opacity as f64 / (self.aerated_lung[0] + self.aerated_lung[1]).max(1) as f64
    }

    /// `voxels` in mL.
    pub fn ml(&self, voxels: usize) -> f64 {
        voxels as f64 * self.voxel_ml
    }
}

/// The bilateral pattern with the default depths.
pub fn severe_covid(hu: &[f32], shape: [usize; 3], spacing: [f64; 3], seed: u64) -> Inserted {
    dependent_pneumonia(hu, shape, spacing, &Side::BOTH, DEFAULT_DEPTH_MM, DEFAULT_GROUND_GLASS_MM, seed)
}

/// Writes dependent pneumonia into `hu` (a copy): for each of `sides`, in the lower half of the
/// lung's cranio-caudal extent, for every slice and column, the aerated-lung voxels within
/// `depth_mm` of that column's most posterior lung voxel become consolidation (+20..+50 HU,
/// varying smoothly, plus the image's noise), except air-bronchogram tubes (2-3 mm, about 5 % of
/// the layer) left as they were; the aerated-lung voxels in the next `ground_glass_mm` anteriorly
/// become ground glass (-600..-450 HU). The depth tapers over the top two slices of the lower half.
///
/// # Panics
///
/// If `hu` does not hold `shape`'s voxels.
pub fn dependent_pneumonia(
    hu: &[f32],
    shape: [usize; 3],
    spacing: [f64; 3],
    sides: &[Side],
    depth_mm: f64,
    ground_glass_mm: f64,
    seed: u64,
) -> Inserted {
    let frame = Frame { shape, spacing };
    assert_eq!(hu.len(), frame.len(), "volume of {shape:?}");
    let [slices, rows, cols] = shape;
    let plane = rows * cols;
    let outside = outside_air(hu, shape);
    let midline_col = body_midline(hu, &outside, shape);
    let lung_mask = lungs(hu, &outside, shape, spacing, midline_col);
    let mut aerated_lung = [0usize; 2];
    for &m in &lung_mask {
        if m > 0 {
            aerated_lung[usize::from(m - 1)] += 1;
        }
    }

    // the layer: 1 consolidation, 2 ground glass, 3 bronchogram
    let mut layer = vec![0u8; hu.len()];
    let mut bronchogram = [0usize; 2];
    let mut enclosed = [0usize; 2];
    for &side in sides {
        // one stream per side: a side's pattern does not depend on the other's
        let mut rng = Rng::new(seed ^ (0xB0 + side.index() as u64));
        let code = side.index() as u8 + 1;
        let in_lung = |i: usize| lung_mask[i] == code;
        let has = |k: usize| (k * plane..(k + 1) * plane).any(in_lung);
        let Some(first) = (0..slices).find(|&k| has(k)) else { continue };
        let Some(last) = (0..slices).rev().find(|&k| has(k)) else { continue };
        let extent = last - first + 1;
        let half = extent / 2;
        let mut candidates = Vec::new();
        for (j, k) in (first..first + half).enumerate() {
            // taper over the top two slices of the lower half
            let fz = ((half - j) as f64 / 2.5).min(1.0);
            let depth = depth_mm * fz;
            let reach = depth + ground_glass_mm * fz;
            for c in 0..cols {
                let Some(post) = (0..rows).rev().find(|&r| in_lung(frame.index(k, r, c))) else { continue };
                let mut pending = 0;
                for r in (0..=post).rev() {
                    let dist = (post - r) as f64 * spacing[1];
                    if dist >= reach {
                        break;
                    }
                    let i = frame.index(k, r, c);
                    if in_lung(i) {
                        layer[i] = if dist < depth { 1 } else { 2 };
                        if dist < depth {
                            candidates.push(i);
                        }
                        enclosed[side.index()] += pending;
                        pending = 0;
                    } else {
                        pending += 1;
                    }
                }
            }
        }
        bronchogram[side.index()] = bronchograms(&frame, &mut layer, &lung_mask, &candidates, side, &mut rng);
    }

    // write the HU
    let sigma = noise_sigma(hu, &outside, shape);
    let smooth = Smooth::for_frame(&frame, 10.0, seed);
    let mut out = hu.to_vec();
    let mut changed_mask = vec![0u8; hu.len()];
    let mut consolidation = [0usize; 2];
    let mut ground_glass = [0usize; 2];
    let mut noise = Rng::new(seed ^ 0x006E_6F69_7365);
    for k in 0..slices {
        for r in 0..rows {
            for c in 0..cols {
                let i = frame.index(k, r, c);
                let what = layer[i];
                if what == 0 || what == 3 {
                    continue;
                }
                let side = usize::from(lung_mask[i] - 1);
                let p = [frame.x(c), frame.y(r), frame.z(k)];
                let jitter = noise.gauss() as f32 * sigma;
                if what == 1 {
                    out[i] = 20.0 + 30.0 * smooth.at(p) + jitter;
                    consolidation[side] += 1;
                } else {
                    out[i] = -600.0 + 150.0 * smooth.at([p[0] + 500.0, p[1], p[2]]) + jitter;
                    ground_glass[side] += 1;
                }
                changed_mask[i] = what;
            }
        }
    }
    Inserted {
        hu: out,
        consolidation,
        ground_glass,
        bronchogram,
        enclosed,
        aerated_lung,
        changed_mask,
        lung_mask,
        midline_col,
        noise_sigma_hu: sigma,
        voxel_ml: spacing.iter().product::<f64>() / 1000.0,
    }
}

/// Air (< -400 HU) connected to the border of its slice (4-connected): outside the body.
fn outside_air(hu: &[f32], shape: [usize; 3]) -> Vec<bool> {
    let [slices, rows, cols] = shape;
    let plane = rows * cols;
    let mut outside = vec![false; hu.len()];
    let mut stack = Vec::new();
    for k in 0..slices {
        let base = k * plane;
        let border = (0..cols)
            .flat_map(|c| [c, (rows - 1) * cols + c])
            .chain((0..rows).flat_map(|r| [r * cols, r * cols + cols - 1]));
        for j in border {
            if hu[base + j] < AIR_HU && !outside[base + j] {
                outside[base + j] = true;
                stack.push(j);
            }
        }
        while let Some(j) = stack.pop() {
            let (r, c) = (j / cols, j % cols);
            let mut visit = |n: usize| {
                if hu[base + n] < AIR_HU && !outside[base + n] {
                    outside[base + n] = true;
                    stack.push(n);
                }
            };
            if c > 0 {
                visit(j - 1);
            }
            if c + 1 < cols {
                visit(j + 1);
            }
            if r > 0 {
                visit(j - cols);
            }
            if r + 1 < rows {
                visit(j + cols);
            }
        }
    }
    outside
}

/// The body's midline column: the median over slices of the mean column of the tissue
/// (>= -400 HU) in the widest rows of the slice's non-outside region.
fn body_midline(hu: &[f32], outside: &[bool], shape: [usize; 3]) -> usize {
    let [slices, rows, cols] = shape;
    let mut mids = Vec::new();
    for k in 0..slices {
        let (mut sum, mut n) = (0.0, 0.0);
        for r in 0..rows {
            for c in 0..cols {
                let i = (k * rows + r) * cols + c;
                if !outside[i] && hu[i] >= AIR_HU {
                    sum += c as f64;
                    n += 1.0;
                }
            }
        }
        if n > 0.0 {
            mids.push(sum / n);
        }
    }
    if mids.is_empty() {
        return cols / 2;
    }
    mids.sort_by(f64::total_cmp);
    mids[mids.len() / 2].round() as usize
}

/// The aerated lungs: 1 left, 2 right.
fn lungs(hu: &[f32], outside: &[bool], shape: [usize; 3], spacing: [f64; 3], midline: usize) -> Vec<u8> {
    let [slices, rows, cols] = shape;
    let plane = rows * cols;
    let mut air: Vec<bool> = hu.iter().zip(outside).map(|(&v, &o)| v < AIR_HU && !o).collect();
    // trachea and main bronchi: small air regions of a slice centred near the midline
    let pixel_mm2 = spacing[1] * spacing[2];
    let mut seen = vec![false; plane];
    let mut stack = Vec::new();
    for k in 0..slices {
        seen.iter_mut().for_each(|s| *s = false);
        for start in 0..plane {
            if !air[k * plane + start] || seen[start] {
                continue;
            }
            seen[start] = true;
            stack.push(start);
            let mut region = Vec::new();
            while let Some(j) = stack.pop() {
                region.push(j);
                for n in crate::grid::neighbours4(j, rows, cols) {
                    if air[k * plane + n] && !seen[n] {
                        seen[n] = true;
                        stack.push(n);
                    }
                }
            }
            let mean_col = region.iter().map(|&j| (j % cols) as f64).sum::<f64>() / region.len() as f64;
            let area = region.len() as f64 * pixel_mm2;
            if area < 1000.0 && (mean_col - midline as f64).abs() * spacing[2] < 30.0 {
                for j in region {
                    air[k * plane + j] = false;
                }
            }
        }
    }
    // 3-D components (6-connected): the largest, and the second if it is a fifth of it or more
    // (the lungs may touch in front of the mediastinum); at least 50 mm from front to back
    let mut comp = vec![u32::MAX; air.len()];
    let mut sizes: Vec<(usize, u32)> = Vec::new();
    let mut stack = Vec::new();
    for start in 0..air.len() {
        if !air[start] || comp[start] != u32::MAX {
            continue;
        }
        let id = sizes.len() as u32;
        comp[start] = id;
        stack.push(start);
        let (mut n, mut rmin, mut rmax) = (0usize, rows, 0usize);
        while let Some(i) = stack.pop() {
            n += 1;
            let r = (i % plane) / cols;
            rmin = rmin.min(r);
            rmax = rmax.max(r);
            for m in crate::grid::neighbours6(i, [slices, rows, cols]) {
                if air[m] && comp[m] == u32::MAX {
                    comp[m] = id;
                    stack.push(m);
                }
            }
        }
        let deep = (rmax - rmin) as f64 * spacing[1] >= 50.0;
        sizes.push((if deep { n } else { 0 }, id));
    }
    sizes.sort_by(|a, b| b.cmp(a));
    let mut chosen = Vec::new();
    if let Some(&(n0, id0)) = sizes.first() {
        if n0 > 0 {
            chosen.push(id0);
            if let Some(&(n1, id1)) = sizes.get(1) {
                if n1 > 0 && n1 * 5 >= n0 {
                    chosen.push(id1);
                }
            }
        }
    }
    let mut mask = vec![0u8; air.len()];
    for (i, &id) in comp.iter().enumerate() {
        if id != u32::MAX && chosen.contains(&id) {
            mask[i] = if i % cols >= midline { 1 } else { 2 };
        }
    }
    mask
}

/// Air-bronchogram tubes (2-3 mm) through the consolidation layer (`layer` 1 -> 3) until about
/// 5 % of it is covered: some run cranio-caudally, some in the axial plane along the layer, each
/// with a fork. Returns the bronchogram voxels.
fn bronchograms(
    frame: &Frame,
    layer: &mut [u8],
    lung_mask: &[u8],
    candidates: &[usize],
    side: Side,
    rng: &mut Rng,
) -> usize {
    let code = side.index() as u8 + 1;
    let target = candidates.len() / 20;
    let [_, rows, cols] = frame.shape;
    let plane = rows * cols;
    let mut count = 0;
    let mut tries = 0;
    while count < target && tries < 2000 {
        tries += 1;
        let i = candidates[(rng.next_u64() % candidates.len() as u64) as usize];
        if layer[i] != 1 {
            continue;
        }
        let (k, r, c) = (i / plane, (i % plane) / cols, i % cols);
        let start = [frame.x(c), frame.y(r), frame.z(k)];
        let sx = side.sign();
        let dir = if rng.uniform() < 0.5 {
            [rng.between(-0.3, 0.3), rng.between(-0.2, 0.2), if rng.uniform() < 0.5 { -1.0 } else { 1.0 }]
        } else {
            [sx * rng.between(0.4, 1.0) * if rng.uniform() < 0.7 { 1.0 } else { -1.0 }, rng.between(-0.4, 0.4), 0.0]
        };
        let n = (dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2]).sqrt();
        let dir = dir.map(|v| v / n);
        let length = rng.between(15.0, 40.0);
        let radius = rng.between(1.0, 1.5);
        let mid = [start[0] + dir[0] * length, start[1] + dir[1] * length, start[2] + dir[2] * length];
        let mut segs = vec![Segment { a: start, b: mid, radius }];
        for turn in [-0.5, 0.5] {
            let d = [dir[0] + turn * dir[1], dir[1] - turn * dir[0], dir[2]];
            let l = rng.between(8.0, 20.0);
            segs.push(Segment {
                a: mid,
                b: [mid[0] + d[0] * l, mid[1] + d[1] * l, mid[2] + d[2] * l],
                radius: radius * 0.8,
            });
        }
        for s in segs {
            frame.capsule(s.a, s.b, s.radius, |j, _| {
                if layer[j] == 1 && lung_mask[j] == code {
                    layer[j] = 3;
                    count += 1;
                }
            });
        }
    }
    count
}

/// The image's noise sigma: a robust spread (1.4826 x MAD) of soft-tissue voxels (0..100 HU)
/// around their 3x3 in-plane mean, corrected for the mean's own share; 3..40 HU.
fn noise_sigma(hu: &[f32], outside: &[bool], shape: [usize; 3]) -> f32 {
    let [slices, rows, cols] = shape;
    let mut devs = Vec::new();
    for k in 0..slices {
        for r in (1..rows.saturating_sub(1)).step_by(3) {
            for c in (1..cols.saturating_sub(1)).step_by(3) {
                let i = (k * rows + r) * cols + c;
                if outside[i] || !(0.0..100.0).contains(&hu[i]) {
                    continue;
                }
                let mut sum = 0.0;
                let mut soft = true;
                for dr in [-1isize, 0, 1] {
                    for dc in [-1isize, 0, 1] {
                        let j = (i as isize + dr * cols as isize + dc) as usize;
                        soft &= (-50.0..150.0).contains(&hu[j]);
                        sum += hu[j];
                    }
                }
                if soft {
                    devs.push((hu[i] - sum / 9.0).abs());
                }
            }
        }
    }
    if devs.is_empty() {
        return 10.0;
    }
    devs.sort_by(f32::total_cmp);
    let mad = devs[devs.len() / 2];
    (1.4826 * mad / (8.0f32 / 9.0).sqrt()).clamp(3.0, 40.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use firstread_volume::{build_study_volume, VolumeContract};
    use std::time::Instant;

    fn sample() -> firstread_volume::Volume {
        build_study_volume(&crate::sample_series(""), &VolumeContract::default()).expect("sample volume").volume
    }

    fn report(name: &str, ins: &Inserted, secs: f64) {
        let ml = |v: [usize; 2]| format!("{:6.1} {:6.1}", ins.ml(v[0]), ins.ml(v[1]));
        eprintln!(
            "{name:22} aerated lung {}  cons {}  gg {}  bronchogram {}  enclosed {}  mL (L R);  opacity {:.1} % L, {:.1} % R, {:.1} % both; noise {:.1} HU; midline col {} ({secs:.2} s)",
            ml(ins.aerated_lung),
            ml(ins.consolidation),
            ml(ins.ground_glass),
            ml(ins.bronchogram),
            ml(ins.enclosed),
            ins.percent_of_lung(Side::Left),
            ins.percent_of_lung(Side::Right),
            ins.percent_of_both_lungs(),
            ins.noise_sigma_hu,
            ins.midline_col,
        );
    }

    #[test]
    fn inserted_pneumonia_in_the_real_sample() {
        let v = sample();
        let [_, rows, cols] = v.shape;
        let t0 = Instant::now();
        let both = severe_covid(&v.hu, v.shape, v.spacing_mm, 7);
        report("both, default depths", &both, t0.elapsed().as_secs_f64());
        // both lungs found, of plausible size; the midline near the image centre
        for side in 0..2 {
            let ml = both.ml(both.aerated_lung[side]);
            assert!((800.0..4000.0).contains(&ml), "aerated lung {side}: {ml:.0} mL");
        }
        assert!(both.midline_col.abs_diff(cols / 2) < cols / 8, "midline {}", both.midline_col);
        let pct = both.percent_of_both_lungs();
        assert!((18.0..28.0).contains(&pct), "bilateral default: {pct:.1} % of the lungs");
        // truth = the voxels changed, with the intended HU
        let mut changed = 0;
        for (i, (&a, &b)) in v.hu.iter().zip(&both.hu).enumerate() {
            let m = both.changed_mask[i];
            if a != b {
                changed += 1;
                assert!(m != 0, "voxel {i} changed outside the mask");
            }
            if m != 0 {
                assert!(both.lung_mask[i] != 0 && a < AIR_HU, "voxel {i}: changed but not aerated lung");
            }
        }
        let total: usize = both.consolidation.iter().chain(&both.ground_glass).sum();
        assert_eq!(changed, total, "every voxel counted changed");
        let mean = |code: u8| {
            let (mut s, mut n) = (0.0, 0.0);
            for (i, &m) in both.changed_mask.iter().enumerate() {
                if m == code {
                    s += f64::from(both.hu[i]);
                    n += 1.0;
                }
            }
            s / n
        };
        let (cons, gg) = (mean(1), mean(2));
        assert!((20.0..50.0).contains(&cons), "consolidation mean {cons:.0} HU");
        assert!((-600.0..-450.0).contains(&gg), "ground glass mean {gg:.0} HU");
        for side in 0..2 {
            assert!(both.bronchogram[side] * 100 >= both.consolidation[side] * 2, "bronchograms {side}");
        }
        // dependent: the changed voxels lie behind the lung's centre
        let row_mean = |f: &dyn Fn(usize) -> bool| {
            let (mut s, mut n) = (0.0, 0.0);
            for i in (0..v.hu.len()).filter(|&i| f(i)) {
                s += ((i / cols) % rows) as f64;
                n += 1.0;
            }
            s / n
        };
        assert!(row_mean(&|i| both.changed_mask[i] == 1) > row_mean(&|i| both.lung_mask[i] != 0) + 20.0);

        // one side only: the other is untouched
        for side in Side::BOTH {
            let t0 = Instant::now();
            let one = dependent_pneumonia(
                &v.hu,
                v.shape,
                v.spacing_mm,
                &[side],
                DEFAULT_DEPTH_MM,
                DEFAULT_GROUND_GLASS_MM,
                7,
            );
            report(&format!("{side:?} only"), &one, t0.elapsed().as_secs_f64());
            let (this, other) = (side.index(), 1 - side.index());
            assert!(one.consolidation[this] > 0 && one.ground_glass[this] > 0);
            assert_eq!(one.consolidation[other] + one.ground_glass[other], 0);
            for (i, &m) in one.changed_mask.iter().enumerate() {
                if m != 0 {
                    let left = i % cols >= one.midline_col;
                    assert_eq!(left, side == Side::Left, "voxel {i} changed on the wrong side");
                }
            }
            assert_eq!(one.consolidation[this], both.consolidation[this], "the sides are independent");
        }
        // deeper layers give more
        for depth in [10.0, 20.0, 40.0] {
            let t0 = Instant::now();
            let ins = dependent_pneumonia(&v.hu, v.shape, v.spacing_mm, &Side::BOTH, depth, 10.0, 7);
            report(&format!("both, {depth} + 10 mm"), &ins, t0.elapsed().as_secs_f64());
        }
    }
}
