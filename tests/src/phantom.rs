//! An anatomical chest CT phantom with voxel-exact truth, for testing lung segmentation and the
//! measurements made on it (lung volume per side, opacity, effusion).
//!
//! Layout (the canonical volume everywhere in firstread): HU `f32`, row-major
//! `[slices, rows, cols]`; axis 0 = slices inferior -> superior, axis 1 = rows anterior ->
//! posterior, axis 2 = columns patient right -> left (the right lung lies at low column indices).
//! Spacing `[slice, row, col]` in mm.
//!
//! Inside this module positions are in mm: `x` = patient left (+) / right (-) of the middle
//! column, `y` = posterior (+) / anterior (-) of the middle row, `z` = height of the voxel centre
//! above the bottom of the volume. Voxels are sampled at their centres (no partial volume), then an
//! optional in-plane [1 2 1]/4 blur stands in for the scanner's point spread.
//!
//! Anatomy: air around a body (elliptic cylinder 320 x 220 mm) lying on a patient table (two dense
//! plates around an air core); skin, subcutaneous fat, chest-wall muscle (thick paraspinal muscles
//! posteriorly); twelve ribs per side as oblique bands descending anteriorly (a slice cuts each
//! side's rib cage into separate arcs with intercostal muscle between them), costal cartilage
//! anteriorly, sternum; a spine (vertebral bodies with discs, canal, posterior elements); the
//! mediastinum (fat, heart, ascending aorta, arch, descending aorta against the left lung's
//! posteromedial surface, SVC, pulmonary arteries into the hila, trachea dividing into the main
//! bronchi, oesophagus); diaphragm domes (right higher) with the liver under the right one and the
//! stomach (with an air bubble) and spleen under the left one; lungs at about -850 HU (gravity
//! gradient and texture) with vessel trees branching from the hila.
//!
//! Truth comes from a label volume ([`Thorax::labels`]) that decides every voxel's HU, so every
//! count is of voxels actually written.

use std::f64::consts::PI;

/// A side of the patient. Arrays of two are indexed `[left, right]` ([`Side::index`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Patient left (high column indices).
    Left,
    /// Patient right (low column indices).
    Right,
}

impl Side {
    /// Both sides, in index order.
    pub const BOTH: [Side; 2] = [Side::Left, Side::Right];

    /// 0 for left, 1 for right: the index into `[left, right]` arrays.
    pub fn index(self) -> usize {
        match self {
            Side::Left => 0,
            Side::Right => 1,
        }
    }

    /// The sign of `x` (mm from the middle column) on this side: +1 left, -1 right.
    pub fn sign(self) -> f64 {
        match self {
            Side::Left => 1.0,
            Side::Right => -1.0,
        }
    }

    /// The side of index `i` (0 left, 1 right).
    pub fn from_index(i: usize) -> Side {
        if i == 0 {
            Side::Left
        } else {
            Side::Right
        }
    }
}

/// What a [`Disease::Mass`] abuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Against {
    /// The mediastinum (heart / mediastinal fat), with a broad flat contact.
    Mediastinum,
    /// The posterior chest wall (ribs and intercostal muscle), with a broad flat contact.
    PosteriorWall,
}

/// Disease written into the phantom's lungs. Several may be combined; they are applied in the
/// order effusion, consolidation, mass, ground-glass sphere (a later one does not overwrite an
/// earlier one's voxels, except a mass, which replaces consolidation / ground glass).
#[derive(Debug, Clone, PartialEq)]
pub enum Disease {
    /// Dependent consolidation (+20..+50 HU, smoothly varying) along the posterior pleural
    /// surface of the lower half of each lung's cranio-caudal extent, `depth_mm` deep (measured
    /// anteriorly, per column, from the most posterior lung voxel: the inner surface of the chest
    /// wall, or the effusion's surface where there is one), with air bronchograms (-900 HU tubes
    /// 2-4 mm wide running cranio-caudally with radial branches), and `ground_glass_mm` of ground
    /// glass (-600..-450 HU) in front of it. It replaces lung: the lung volume is unchanged. The
    /// depth tapers to zero over the top eighth of the lower half.
    DependentConsolidation {
        /// The lungs affected.
        sides: Vec<Side>,
        /// Consolidation depth from the posterior pleural surface, mm.
        depth_mm: f64,
        /// Ground glass in front of the consolidation, mm.
        ground_glass_mm: f64,
    },
    /// A dense (+30 HU) lobulated sphere in the lung, its centre half a radius away from the
    /// mediastinal border (at the heart, at 45 % of the lung height) or from the posterior chest
    /// wall (at 45 % of the lung height, 75 mm from the midline), so it abuts it over a broad,
    /// flat contact. Only lung voxels become mass.
    Mass {
        /// The lung.
        side: Side,
        /// What it abuts.
        against: Against,
        /// Diameter, mm.
        diameter_mm: f64,
    },
    /// Pleural effusion (+10 HU, homogeneous): a dependent meniscus along the posterior chest
    /// wall, up to `depth_mm` thick (per column, from the posterior pleural surface; it fills the
    /// thinner costophrenic recess entirely), full depth over the lowest 40 % of its height, then
    /// thinning to nothing at (30 + depth_mm / 2) % of the lung height; thinning laterally to
    /// half. It replaces lung: the lung volume shrinks by the effusion volume.
    Effusion {
        /// The pleural cavity.
        side: Side,
        /// Greatest thickness, mm.
        depth_mm: f64,
    },
    /// A -500 HU ground-glass sphere in aerated lung, centred on the lung's centroid in the slice
    /// at 60 % of its height (only aerated lung and vessels become ground glass).
    GroundGlassSphere {
        /// The lung.
        side: Side,
        /// Radius, mm.
        radius_mm: f64,
    },
}

/// What to build.
#[derive(Debug, Clone, PartialEq)]
pub struct ThoraxSpec {
    /// `[slices, rows, cols]`.
    pub shape: [usize; 3],
    /// `[slice, row, col]` spacing, mm.
    pub spacing: [f64; 3],
    /// Gaussian noise sigma added to every voxel, HU (deterministic).
    pub noise_hu: f32,
    /// Seed of every random choice (noise, texture, vessel and bronchogram trees).
    pub seed: u64,
    /// In-plane [1 2 1]/4 blur (a mild point-spread function) before the noise.
    pub blur: bool,
    /// Disease to write.
    pub disease: Vec<Disease>,
}

impl ThoraxSpec {
    /// A healthy thorax: noise sigma 12 HU, seed 1, blur on.
    pub fn standard(shape: [usize; 3], spacing: [f64; 3]) -> ThoraxSpec {
        ThoraxSpec { shape, spacing, noise_hu: 12.0, seed: 1, blur: true, disease: Vec::new() }
    }

    /// This spec with one more disease.
    pub fn with(mut self, disease: Disease) -> ThoraxSpec {
        self.disease.push(disease);
        self
    }

    /// The standard cases, named: healthy; bilateral dependent consolidation 10, 25 and 40 mm
    /// deep with 10 mm of ground glass; a right mass against the mediastinum; a left mass
    /// against the posterior wall; left effusion 20 mm; right effusion 40 mm; bilateral 40 mm
    /// effusion with 25 mm consolidation above it; a 20 mm ground-glass sphere on the left.
    pub fn standard_cases(shape: [usize; 3], spacing: [f64; 3]) -> Vec<(&'static str, ThoraxSpec)> {
        let base = ThoraxSpec::standard(shape, spacing);
        let both = vec![Side::Left, Side::Right];
        let cons =
            |depth_mm: f64| Disease::DependentConsolidation { sides: both.clone(), depth_mm, ground_glass_mm: 10.0 };
        vec![
            ("healthy", base.clone()),
            ("consolidation 10 mm", base.clone().with(cons(10.0))),
            ("consolidation 25 mm", base.clone().with(cons(25.0))),
            ("consolidation 40 mm", base.clone().with(cons(40.0))),
            (
                "mass R mediastinum",
                base.clone().with(Disease::Mass {
                    side: Side::Right,
                    against: Against::Mediastinum,
                    diameter_mm: 40.0,
                }),
            ),
            (
                "mass L posterior wall",
                base.clone().with(Disease::Mass {
                    side: Side::Left,
                    against: Against::PosteriorWall,
                    diameter_mm: 40.0,
                }),
            ),
            ("effusion L 20 mm", base.clone().with(Disease::Effusion { side: Side::Left, depth_mm: 20.0 })),
            ("effusion R 40 mm", base.clone().with(Disease::Effusion { side: Side::Right, depth_mm: 40.0 })),
            (
                "effusion 40 + cons 25",
                base.clone()
                    .with(Disease::Effusion { side: Side::Left, depth_mm: 40.0 })
                    .with(Disease::Effusion { side: Side::Right, depth_mm: 40.0 })
                    .with(cons(25.0)),
            ),
            ("ground glass L 20 mm", base.with(Disease::GroundGlassSphere { side: Side::Left, radius_mm: 20.0 })),
        ]
    }
}

/// Label values of [`Thorax::labels`]: below [`label::LUNG_BASE`] the voxel is not in a pleural
/// cavity; from it, `LUNG_BASE + 2 * class + side index`.
pub mod label {
    /// Any tissue outside the pleural cavities (HU set by the anatomy).
    pub const OTHER: u8 = 0;
    /// First pleural-cavity label.
    pub const LUNG_BASE: u8 = 16;
    /// Aerated lung.
    pub const AIR: u8 = 1;
    /// Vessel inside the lung.
    pub const VESSEL: u8 = 2;
    /// Pleural effusion (not lung).
    pub const EFFUSION: u8 = 3;
    /// Consolidation.
    pub const CONSOLIDATION: u8 = 4;
    /// Air bronchogram inside consolidation (lung, not opacity).
    pub const BRONCHOGRAM: u8 = 5;
    /// Ground glass in front of a consolidation.
    pub const GROUND_GLASS: u8 = 6;
    /// Mass.
    pub const MASS: u8 = 7;
    /// Ground-glass sphere.
    pub const GROUND_GLASS_SPHERE: u8 = 8;

    /// The label of `class` on side index `side` (0 left, 1 right).
    pub fn code(class: u8, side: usize) -> u8 {
        LUNG_BASE + 2 * class + side as u8
    }

    /// `(class, side index)` of a pleural-cavity label, `None` for [`OTHER`].
    pub fn split(code: u8) -> Option<(u8, usize)> {
        (code >= LUNG_BASE).then(|| ((code - LUNG_BASE) / 2, usize::from((code - LUNG_BASE) & 1)))
    }

    /// Whether `class` counts as lung (everything in the cavity but effusion).
    pub fn is_lung(class: u8) -> bool {
        class != EFFUSION
    }

    /// Whether `class` counts as opacity (consolidation, ground glass, mass; not the air
    /// bronchograms).
    pub fn is_opacity(class: u8) -> bool {
        matches!(class, CONSOLIDATION | GROUND_GLASS | MASS | GROUND_GLASS_SPHERE)
    }
}

/// Voxel-exact truth, per side `[left, right]` in voxels (see [`Truth::ml`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Truth {
    /// Volume of one voxel, mL.
    pub voxel_ml: f64,
    /// Lung: aerated lung + vessels + consolidation + bronchograms + ground glass + masses (the
    /// pleural cavity without effusion; not the trachea or main bronchi, which are mediastinal).
    pub lung: [usize; 2],
    /// Opacity: consolidation + ground glass (both kinds) + masses; not the bronchograms.
    pub opacity: [usize; 2],
    /// Pleural effusion.
    pub effusion: [usize; 2],
    /// Consolidation (without its bronchograms).
    pub consolidation: [usize; 2],
    /// Ground glass: in front of consolidation plus ground-glass spheres.
    pub ground_glass: [usize; 2],
    /// Masses.
    pub mass: [usize; 2],
    /// Air bronchograms inside consolidation (counted as lung, not as opacity).
    pub bronchogram: [usize; 2],
    /// Vessels inside the lung.
    pub vessel: [usize; 2],
    /// Lung masks, same layout as the volume, 1 = lung.
    pub lung_mask: [Vec<u8>; 2],
    /// Opacity mask, both sides.
    pub opacity_mask: Vec<u8>,
    /// Effusion masks.
    pub effusion_mask: [Vec<u8>; 2],
    /// Mass mask, both sides.
    pub mass_mask: Vec<u8>,
}

impl Truth {
    /// `voxels` in mL.
    pub fn ml(&self, voxels: usize) -> f64 {
        voxels as f64 * self.voxel_ml
    }

    /// Opacity as a percentage of the lung of `side`.
    pub fn involvement_pct(&self, side: Side) -> f64 {
        let i = side.index();
        100.0 * self.opacity[i] as f64 / self.lung[i].max(1) as f64
    }
}

/// A built phantom.
#[derive(Debug, Clone, PartialEq)]
pub struct Thorax {
    /// HU, `[slices, rows, cols]`.
    pub hu: Vec<f32>,
    /// `[slices, rows, cols]`.
    pub shape: [usize; 3],
    /// `[slice, row, col]` spacing, mm.
    pub spacing: [f64; 3],
    /// One [`label`] per voxel.
    pub labels: Vec<u8>,
    /// The truth.
    pub truth: Truth,
}

impl Thorax {
    /// Offset of voxel `(k, r, c)`.
    pub fn index(&self, k: usize, r: usize, c: usize) -> usize {
        (k * self.shape[1] + r) * self.shape[2] + c
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry and small tools shared with `inserted`.

/// Position <-> index for a volume: `x`, `y` centred on the middle column / row, `z` from the
/// bottom of the volume.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    pub shape: [usize; 3],
    pub spacing: [f64; 3],
}

impl Frame {
    pub fn x(&self, c: usize) -> f64 {
        (c as f64 - (self.shape[2] as f64 - 1.0) / 2.0) * self.spacing[2]
    }
    pub fn y(&self, r: usize) -> f64 {
        (r as f64 - (self.shape[1] as f64 - 1.0) / 2.0) * self.spacing[1]
    }
    pub fn z(&self, k: usize) -> f64 {
        (k as f64 + 0.5) * self.spacing[0]
    }
    pub fn index(&self, k: usize, r: usize, c: usize) -> usize {
        (k * self.shape[1] + r) * self.shape[2] + c
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Index range `[lo, hi)` along `axis` whose positions lie within `[min, max]` mm.
    pub fn range(&self, axis: usize, min: f64, max: f64) -> (usize, usize) {
        let n = self.shape[axis];
        let sp = self.spacing[axis];
        let offset = if axis == 0 { 0.5 } else { -(n as f64 - 1.0) / 2.0 };
        // position = (i + offset) * sp
        let lo = (min / sp - offset).ceil().max(0.0);
        let hi = (max / sp - offset).floor() + 1.0;
        let hi = hi.min(n as f64);
        if hi <= lo {
            (0, 0)
        } else {
            (lo as usize, hi as usize)
        }
    }

    /// Calls `f(index, distance)` for every voxel whose centre lies within `radius` of the segment
    /// `a`-`b` (positions `[x, y, z]` mm).
    pub fn capsule(&self, a: [f64; 3], b: [f64; 3], radius: f64, mut f: impl FnMut(usize, f64)) {
        let ab = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
        let len2 = (ab[0] * ab[0] + ab[1] * ab[1] + ab[2] * ab[2]).max(1e-12);
        let (k0, k1) = self.range(0, a[2].min(b[2]) - radius, a[2].max(b[2]) + radius);
        let (r0, r1) = self.range(1, a[1].min(b[1]) - radius, a[1].max(b[1]) + radius);
        let (c0, c1) = self.range(2, a[0].min(b[0]) - radius, a[0].max(b[0]) + radius);
        let r2 = radius * radius;
        for k in k0..k1 {
            let pz = self.z(k) - a[2];
            for r in r0..r1 {
                let py = self.y(r) - a[1];
                for c in c0..c1 {
                    let px = self.x(c) - a[0];
                    let t = ((px * ab[0] + py * ab[1] + pz * ab[2]) / len2).clamp(0.0, 1.0);
                    let (dx, dy, dz) = (px - t * ab[0], py - t * ab[1], pz - t * ab[2]);
                    let d2 = dx * dx + dy * dy + dz * dz;
                    if d2 <= r2 {
                        f(self.index(k, r, c), d2.sqrt());
                    }
                }
            }
        }
    }
}

/// xorshift64* PRNG.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix the seed so that small seeds give unrelated streams; never zero
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    /// Standard normal (Box-Muller).
    pub fn gauss(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
    }
}

/// Adds gaussian noise of sigma `sigma` to every voxel (a table of normal samples indexed by a
/// fast PRNG: cheap even unoptimised) and clamps to -1024 HU.
pub(crate) fn add_noise(hu: &mut [f32], sigma: f32, seed: u64) {
    if sigma <= 0.0 {
        return;
    }
    let mut rng = Rng::new(seed ^ 0x006E_6F69_7365);
    let table: Vec<f32> = (0..65536).map(|_| rng.gauss() as f32 * sigma).collect();
    let mut state = rng.next_u64() | 1;
    for v in hu.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *v = (*v + table[(state >> 48) as usize]).max(-1024.0);
    }
}

/// Smooth value noise in [0, 1]: random values on a periodic lattice `cell` mm apart,
/// interpolated trilinearly (smoothstep weights).
#[derive(Debug, Clone)]
pub(crate) struct Smooth {
    values: Vec<f32>,
    dims: [usize; 3],
    cell: f64,
    origin: [f64; 3],
}

impl Smooth {
    /// Covers `[x, y, z]` in `[origin, origin + extent]` mm.
    pub fn new(origin: [f64; 3], extent: [f64; 3], cell: f64, seed: u64) -> Smooth {
        let dims = extent.map(|e| (e / cell).ceil().max(1.0) as usize + 1);
        let mut rng = Rng::new(seed ^ 0x736D_6F6F_7468);
        let values = (0..dims[0] * dims[1] * dims[2]).map(|_| rng.uniform() as f32).collect();
        Smooth { values, dims, cell, origin }
    }

    /// A covering for the whole volume of `frame`.
    pub fn for_frame(frame: &Frame, cell: f64, seed: u64) -> Smooth {
        let half = |a: usize| frame.shape[a] as f64 * frame.spacing[a] / 2.0 + cell;
        Smooth::new(
            [-half(2), -half(1), -cell],
            [2.0 * half(2), 2.0 * half(1), frame.shape[0] as f64 * frame.spacing[0] + 2.0 * cell],
            cell,
            seed,
        )
    }

    /// The value at `[x, y, z]` mm (the lattice repeats outside its extent).
    pub fn at(&self, p: [f64; 3]) -> f32 {
        // periodic lattice: offsets of the position give unrelated fields
        let mut i0 = [0usize; 3];
        let mut i1 = [0usize; 3];
        let mut f = [0f32; 3];
        for a in 0..3 {
            let t = (p[a] - self.origin[a]) / self.cell;
            let fl = t.floor();
            let n = self.dims[a] as i64;
            i0[a] = (fl as i64).rem_euclid(n) as usize;
            i1[a] = (fl as i64 + 1).rem_euclid(n) as usize;
            let w = (t - fl) as f32;
            f[a] = w * w * (3.0 - 2.0 * w);
        }
        let [nx, ny, _] = self.dims;
        let at = |x: usize, y: usize, z: usize| self.values[(z * ny + y) * nx + x];
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let ([x0, y0, z0], [x1, y1, z1]) = (i0, i1);
        let c00 = lerp(at(x0, y0, z0), at(x1, y0, z0), f[0]);
        let c10 = lerp(at(x0, y1, z0), at(x1, y1, z0), f[0]);
        let c01 = lerp(at(x0, y0, z1), at(x1, y0, z1), f[0]);
        let c11 = lerp(at(x0, y1, z1), at(x1, y1, z1), f[0]);
        lerp(lerp(c00, c10, f[1]), lerp(c01, c11, f[1]), f[2])
    }
}

/// In-plane separable [1 2 1]/4 blur of every slice (edges replicate).
pub(crate) fn blur_in_plane(hu: &mut [f32], shape: [usize; 3]) {
    let [s, rows, cols] = shape;
    if rows < 3 || cols < 3 {
        return;
    }
    let mut tmp = vec![0f32; rows * cols];
    for k in 0..s {
        let slice = &mut hu[k * rows * cols..(k + 1) * rows * cols];
        for r in 0..rows {
            let row = &slice[r * cols..(r + 1) * cols];
            let out = &mut tmp[r * cols..(r + 1) * cols];
            out[0] = 0.75 * row[0] + 0.25 * row[1];
            out[cols - 1] = 0.75 * row[cols - 1] + 0.25 * row[cols - 2];
            for c in 1..cols - 1 {
                out[c] = 0.25 * (row[c - 1] + row[c + 1]) + 0.5 * row[c];
            }
        }
        for r in 0..rows {
            let up = r.saturating_sub(1);
            let down = (r + 1).min(rows - 1);
            for c in 0..cols {
                slice[r * cols + c] = 0.25 * (tmp[up * cols + c] + tmp[down * cols + c]) + 0.5 * tmp[r * cols + c];
            }
        }
    }
}

fn normalize(v: [f64; 3]) -> [f64; 3] {
    let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(1e-12);
    [v[0] / n, v[1] / n, v[2] / n]
}

fn add(a: [f64; 3], b: [f64; 3], s: f64) -> [f64; 3] {
    [a[0] + s * b[0], a[1] + s * b[1], a[2] + s * b[2]]
}

/// Two directions diverging from `dir` by about `spread` (radians-ish), in a random plane.
pub(crate) fn fork(rng: &mut Rng, dir: [f64; 3], spread: f64) -> [[f64; 3]; 2] {
    let v = [rng.between(-1.0, 1.0), rng.between(-1.0, 1.0), rng.between(-1.0, 1.0)];
    let dot = v[0] * dir[0] + v[1] * dir[1] + v[2] * dir[2];
    let perp = normalize(add(v, dir, -dot));
    let t = spread.tan();
    [normalize(add(dir, perp, t)), normalize(add(dir, perp, -t * rng.between(0.6, 1.0)))]
}

/// A tube segment: from `a` to `b` (mm), radius mm.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub a: [f64; 3],
    pub b: [f64; 3],
    pub radius: f64,
}

/// A branching tree of segments from `root` along `dir`: `levels` generations, each forking in
/// two, lengths shrinking by 0.7-0.9 and radii by 0.8 (not below 1.5 mm).
pub(crate) fn tree(
    rng: &mut Rng,
    root: [f64; 3],
    dir: [f64; 3],
    length: f64,
    radius: f64,
    levels: usize,
    out: &mut Vec<Segment>,
) {
    let b = add(root, normalize(dir), length);
    out.push(Segment { a: root, b, radius });
    if levels > 1 {
        for child in fork(rng, normalize(dir), 0.55) {
            let len = length * rng.between(0.7, 0.9);
            tree(rng, b, child, len, (radius * 0.8).max(1.5), levels - 1, out);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Anatomy constants (mm).

const BODY_A: f64 = 160.0; // half width
const BODY_B: f64 = 110.0; // half depth
const BODY_YC: f64 = -10.0; // centre (anterior of the middle row)
const SKIN: f64 = 2.0;
const RIB_THICK: f64 = 9.0;
const PLEURA: f64 = 3.0; // innermost intercostal / parietal pleura between ribs and lung
const DIAPHRAGM: f64 = 7.0;
/// Where the ribs begin beside the spine: angle from the posterior midline, radians.
const RIB_PHI0: f64 = 0.22;

// Pixel kinds of the in-plane precomputation.
const PX_FIXED: u8 = 0; // HU fixed through z
const PX_RIB: u8 = 1; // rib band: rib / cartilage or intercostal muscle by z
const PX_STERNUM: u8 = 2; // sternum by z, else the fallback
const PX_VERTEBRA: u8 = 3; // vertebral body: bone or disc by z
const PX_INTERIOR: u8 = 4; // inside the inner chest wall: organs, mediastinum, pleural cavity

// Working labels of the build (below label::LUNG_BASE).
const W_CAVITY: u8 = 1;
const W_NECK: u8 = 2;
const W_ABDOMEN: u8 = 3;

// Abdominal organs under the diaphragm.
const ORG_LIVER: u8 = 1;
const ORG_STOMACH: u8 = 2;
const ORG_SPLEEN: u8 = 3;
const ORG_OTHER: u8 = 4;

#[derive(Debug, Clone, Copy, Default)]
struct Pixel {
    kind: u8,
    /// Fixed HU, or the fallback where the z-dependent structure is absent.
    hu: f32,
    /// Rib: position along the rib, 0 at its posterior end, 1 at the anterior midline.
    s: f32,
    /// Rib / sternum / vertebra: near the surface of the bone (cortex).
    edge: bool,
    /// Interior: height of the diaphragm (z mm), the organ under it.
    diaphragm_z: f32,
    organ: u8,
}

/// Vertical scale of the thorax within the volume.
#[derive(Debug, Clone, Copy)]
struct Levels {
    /// Lowest lung point (posterior costophrenic recess), mm.
    z0: f64,
    /// Height from the base to the apex, mm.
    h: f64,
}

impl Levels {
    fn new(frame: &Frame) -> Levels {
        let ext = frame.shape[0] as f64 * frame.spacing[0];
        Levels { z0: 0.05 * ext, h: (0.9 * ext).min(260.0) }
    }
    /// z (mm) of height fraction `u` (0 base, 1 apex).
    fn z(&self, u: f64) -> f64 {
        self.z0 + u * self.h
    }
    fn u(&self, z: f64) -> f64 {
        (z - self.z0) / self.h
    }
}

/// Diaphragm height fraction at (x, y): the higher of the two domes.
fn dome_u(x: f64, y: f64) -> f64 {
    let dome = |xc: f64, top: f64| {
        let n = ((x - xc) / 78.0).powi(2) + ((y + 18.0) / 88.0).powi(2);
        top * (1.0 - n.powf(1.4))
    };
    dome(-62.0, 0.36).max(dome(62.0, 0.30)).max(-0.05)
}

/// The in-plane precomputation: chest wall layers, spine, table, and for the interior the
/// diaphragm height and organ.
fn pixels(frame: &Frame, lv: &Levels) -> Vec<Pixel> {
    let [_, rows, cols] = frame.shape;
    let mut out = vec![Pixel::default(); rows * cols];
    let body_back = BODY_YC + BODY_B;
    for r in 0..rows {
        let y = frame.y(r);
        for c in 0..cols {
            let x = frame.x(c);
            let p = &mut out[r * cols + c];
            let dy = y - BODY_YC;
            let rho = ((x / BODY_A).powi(2) + (dy / BODY_B).powi(2)).sqrt();
            if rho > 1.0 {
                // air, or the table under the body: plates around an air core
                let t = y - body_back;
                let plate = (3.5..6.5).contains(&t) || (18.5..21.5).contains(&t);
                let wall = (6.5..18.5).contains(&t) && x.abs() > 170.0;
                p.hu = if x.abs() < 190.0 && (plate || wall) { 320.0 } else { -1000.0 };
                continue;
            }
            let rad = x.hypot(dy);
            // depth below the skin along the ray from the body centre
            let d = if rho < 1e-9 { BODY_B } else { rad * (1.0 / rho - 1.0) };
            let phi = x.abs().atan2(dy); // 0 posterior midline, PI anterior
            let fat = 10.0 + 3.0 * phi.sin();
            let paraspinal = if phi < 0.6 { 28.0 * (phi / 0.6 * PI / 2.0).cos().powi(2) } else { 0.0 };
            let muscle = 7.0 + 4.0 * (-phi.cos()).max(0.0) + paraspinal;
            let w = SKIN + fat + muscle; // outer surface of the rib band
            let below_fat = d >= SKIN + fat;
            let ax = x.abs();
            let layered = if d < SKIN {
                30.0
            } else if d < SKIN + fat {
                -100.0
            } else if d < w + RIB_THICK {
                50.0 // muscle, or intercostal muscle between ribs
            } else if d < w + RIB_THICK + PLEURA {
                20.0
            } else {
                f32::NAN
            };
            // spine (posterior midline), deeper than the subcutaneous fat
            let vb = (x / 21.0).powi(2) + ((y - 20.0) / 17.0).powi(2);
            let canal = x * x + (y - 48.0).powi(2);
            let spine_bone = below_fat
                && ((81.0 < canal && canal <= 196.0 && y > 40.0)
                    || ((5.0..13.0).contains(&ax) && (33.0..45.0).contains(&y))
                    || (ax < 4.0 && (56.0..82.0).contains(&y))
                    || ((8.0..36.0).contains(&ax) && (40.0..50.0).contains(&y)));
            if vb <= 1.0 {
                p.kind = PX_VERTEBRA;
                p.edge = vb > 0.72;
                continue;
            }
            if below_fat && canal <= 81.0 {
                p.hu = 30.0;
                continue;
            }
            if spine_bone {
                p.hu = 500.0;
                continue;
            }
            let paraspinal_block = below_fat && ax < 40.0 && y > 36.0;
            let in_band = d >= w && d < w + RIB_THICK;
            if in_band && phi >= RIB_PHI0 && ax >= 17.0 {
                p.kind = PX_RIB;
                p.hu = 50.0;
                p.s = ((phi - RIB_PHI0) / (PI - RIB_PHI0)) as f32;
                p.edge = d < w + 1.5 || d > w + RIB_THICK - 1.5;
                continue;
            }
            if paraspinal_block {
                p.hu = 50.0;
                continue;
            }
            if ax < 17.0 && phi > 2.6 && d >= w - 4.0 && d < w + 10.0 {
                p.kind = PX_STERNUM;
                p.hu = if layered.is_nan() { 20.0 } else { layered };
                p.edge = ax > 14.0 || d < w - 2.5 || d > w + 8.5;
                continue;
            }
            if !layered.is_nan() {
                p.hu = layered;
                continue;
            }
            p.kind = PX_INTERIOR;
            p.diaphragm_z = lv.z(dome_u(x, y)) as f32;
            p.organ = if x < 10.0 || (x < 45.0 && y < -35.0) {
                ORG_LIVER
            } else if ((x - 45.0) / 40.0).powi(2) + ((y + 35.0) / 40.0).powi(2) <= 1.0 {
                ORG_STOMACH
            } else if ((x - 85.0) / 30.0).powi(2) + ((y - 35.0) / 42.0).powi(2) <= 1.0 {
                ORG_SPLEEN
            } else {
                ORG_OTHER
            };
        }
    }
    out
}

/// Whether (x, y) mm at height fraction `u` lies above the lung's apex. Above u 0.72 each lung
/// narrows towards its apex at u 1: an ellipse 80 mm wide and 95 mm deep at u 0.72 shrinking to
/// nothing, whose posterior edge stays where it was (behind the chest wall's inner surface), so
/// that the upper lobe narrows from the front and the sides and keeps to the posterior ribs, as in
/// a real thorax (the apex rises behind, against the necks of the first ribs; the bundled sample's
/// top slices show it). Outside it: soft tissue of the thoracic inlet.
fn above_apex(x: f64, y: f64, u: f64) -> bool {
    if u <= 0.72 {
        return false;
    }
    if u >= 1.0 {
        return true;
    }
    let r = (1.0 - ((u - 0.72) / 0.28).powi(2)).max(0.0).sqrt();
    let (xc, back) = (if x > 0.0 { 50.0 } else { -50.0 }, 12.0 + 95.0);
    let yc = back - 95.0 * r;
    ((x - xc) / 80.0).powi(2) + ((y - yc) / 95.0).powi(2) > r * r
}

/// A mediastinal structure: a tube (or an ellipsoid) with a fat margin.
struct Structure {
    kind: StructureKind,
    /// Fat around it (excluded from the pleural cavity), mm.
    margin: f64,
    hu: f32,
    /// Air lumen with a wall of this thickness (trachea, bronchi); 0 = solid.
    wall: f64,
    /// Also painted below the diaphragm (the aorta).
    abdominal: bool,
}

enum StructureKind {
    Tube(Segment),
    Ellipsoid { centre: [f64; 3], semi: [f64; 3] },
}

fn mediastinum(lv: &Levels, frame: &Frame) -> Vec<Structure> {
    let z = |u: f64| lv.z(u);
    let top = frame.shape[0] as f64 * frame.spacing[0] + 20.0;
    let tube = |a: [f64; 3], b: [f64; 3], radius: f64, margin: f64, hu: f32| Structure {
        kind: StructureKind::Tube(Segment { a, b, radius }),
        margin,
        hu,
        wall: 0.0,
        abdominal: false,
    };
    let airway = |a: [f64; 3], b: [f64; 3], radius: f64, wall: f64| Structure {
        kind: StructureKind::Tube(Segment { a, b, radius }),
        margin: 6.0, // hilar tissue: more than a slice from the lung
        hu: 60.0,
        wall,
        abdominal: false,
    };
    let carina = [0.0, -22.0, z(0.68)];
    let pa_split = [8.0, -40.0, z(0.57)];
    vec![
        Structure {
            kind: StructureKind::Ellipsoid { centre: [22.0, -30.0, z(0.35)], semi: [62.0, 48.0, 0.19 * lv.h] },
            margin: 4.0,
            hu: 40.0,
            wall: 0.0,
            abdominal: false,
        },
        // ascending aorta, arch, descending aorta (on through the hiatus)
        tube([-6.0, -35.0, z(0.47)], [-6.0, -35.0, z(0.77)], 15.0, 3.0, 40.0),
        tube([-6.0, -35.0, z(0.78)], [30.0, -2.0, z(0.78)], 13.0, 3.0, 40.0),
        Structure {
            kind: StructureKind::Tube(Segment { a: [30.0, -2.0, z(0.78)], b: [30.0, -2.0, -20.0], radius: 12.5 }),
            margin: 0.0, // the left lung touches it
            hu: 40.0,
            wall: 0.0,
            abdominal: true,
        },
        // superior vena cava
        tube([-30.0, -32.0, z(0.50)], [-30.0, -32.0, top], 10.0, 2.0, 40.0),
        // pulmonary trunk and arteries into the hila
        tube([8.0, -52.0, z(0.46)], pa_split, 13.0, 3.0, 40.0),
        tube(pa_split, [-46.0, -12.0, z(0.56)], 9.5, 2.0, 40.0),
        tube(pa_split, [46.0, -4.0, z(0.60)], 9.5, 2.0, 40.0),
        // oesophagus
        tube([2.0, -6.0, top], [8.0, -6.0, z(0.2)], 8.0, 2.0, 40.0),
        // trachea and main bronchi
        airway([0.0, -22.0, top], carina, 9.0, 2.0),
        airway(carina, [-40.0, -10.0, z(0.615)], 6.5, 1.5),
        airway(carina, [42.0, -6.0, z(0.60)], 6.0, 1.5),
    ]
}

/// Calls `f(index, normalised distance)` (1 = surface) for every voxel of the ellipsoid grown by
/// `grow` mm.
fn ellipsoid(frame: &Frame, centre: [f64; 3], semi: [f64; 3], grow: f64, mut f: impl FnMut(usize, f64)) {
    let s = semi.map(|v| v + grow);
    let (k0, k1) = frame.range(0, centre[2] - s[2], centre[2] + s[2]);
    let (r0, r1) = frame.range(1, centre[1] - s[1], centre[1] + s[1]);
    let (c0, c1) = frame.range(2, centre[0] - s[0], centre[0] + s[0]);
    for k in k0..k1 {
        let dz = (frame.z(k) - centre[2]) / s[2];
        for r in r0..r1 {
            let dy = (frame.y(r) - centre[1]) / s[1];
            for c in c0..c1 {
                let dx = (frame.x(c) - centre[0]) / s[0];
                let n = dx * dx + dy * dy + dz * dz;
                if n <= 1.0 {
                    f(frame.index(k, r, c), n.sqrt());
                }
            }
        }
    }
}

/// Builds the phantom of `spec`.
pub fn thorax(spec: &ThoraxSpec) -> Thorax {
    let frame = Frame { shape: spec.shape, spacing: spec.spacing };
    let lv = Levels::new(&frame);
    let [slices, rows, cols] = spec.shape;
    let plane = rows * cols;
    let n = frame.len();
    let px = pixels(&frame, &lv);
    let mut hu = vec![-1000f32; n];
    let mut lab = vec![label::OTHER; n];
    let smooth = Smooth::for_frame(&frame, 9.0, spec.seed);

    // Phase A: chest wall, ribs, spine, abdomen, and the interior above the diaphragm.
    let pitch = 0.088 * lv.h; // rib spacing (vertical)
    let rib_h = 0.5 * pitch; // rib height
    let drop = 5.5 * pitch; // a rib's anterior end lies this much lower than its posterior end
    let rib1 = lv.z(0.97); // rib 1's posterior end
    let vert_pitch = 0.095 * lv.h;
    let sternum = (lv.z(0.30), lv.z(0.93));
    for k in 0..slices {
        let z = frame.z(k);
        let u = lv.u(z);
        let disc = ((z - lv.z0) / vert_pitch).rem_euclid(1.0) * vert_pitch < 5.0;
        for (j, p) in px.iter().enumerate() {
            let i = k * plane + j;
            hu[i] = match p.kind {
                PX_FIXED => p.hu,
                PX_RIB => {
                    let s = f64::from(p.s);
                    let t = (rib1 - drop * s.powf(1.3) - z) / pitch;
                    let rib = t.round();
                    let dz = (t - rib) * pitch;
                    let end = if rib >= 10.0 {
                        0.55
                    } else if rib >= 9.0 {
                        0.8
                    } else {
                        0.95
                    };
                    if (0.0..=11.0).contains(&rib) && dz.abs() < rib_h / 2.0 && s <= end {
                        if s > 0.78 && rib < 10.0 {
                            120.0 // costal cartilage
                        } else if p.edge || dz.abs() > rib_h / 2.0 - 1.5 {
                            700.0
                        } else {
                            380.0
                        }
                    } else {
                        p.hu
                    }
                }
                PX_STERNUM => {
                    if (sternum.0..sternum.1).contains(&z) {
                        if p.edge {
                            650.0
                        } else {
                            350.0
                        }
                    } else {
                        p.hu
                    }
                }
                PX_VERTEBRA => {
                    if disc {
                        90.0
                    } else if p.edge {
                        600.0
                    } else {
                        300.0
                    }
                }
                _ => {
                    let zd = f64::from(p.diaphragm_z);
                    if z <= zd - DIAPHRAGM {
                        lab[i] = W_ABDOMEN;
                        let below = zd - z;
                        match p.organ {
                            ORG_LIVER if below < 160.0 => 60.0,
                            ORG_STOMACH if below < 110.0 => {
                                if frame.y(j / cols) < -55.0 && below < 60.0 {
                                    -1000.0
                                } else {
                                    50.0
                                }
                            }
                            ORG_SPLEEN if below < 110.0 => 50.0,
                            _ => {
                                if smooth.at([frame.x(j % cols) + 300.0, frame.y(j / cols), z]) > 0.5 {
                                    30.0
                                } else {
                                    -90.0
                                }
                            }
                        }
                    } else if z <= zd {
                        lab[i] = W_ABDOMEN;
                        45.0
                    } else if above_apex(frame.x(j % cols), frame.y(j / cols), u) {
                        lab[i] = W_NECK;
                        30.0
                    } else {
                        lab[i] = W_CAVITY;
                        -850.0
                    }
                }
            };
        }
    }

    // Phase B: the mediastinum. A central band and each structure's margin become fat, then
    // the structures themselves.
    let paintable = |l: u8, abdominal: bool| l == W_CAVITY || l == W_NECK || (abdominal && l == W_ABDOMEN);
    let (c0, c1) = frame.range(2, -13.0, 13.0);
    for k in 0..slices {
        for r in 0..rows {
            for c in c0..c1 {
                let i = frame.index(k, r, c);
                if paintable(lab[i], false) {
                    lab[i] = label::OTHER;
                    hu[i] = -100.0;
                }
            }
        }
    }
    let structures = mediastinum(&lv, &frame);
    for s in &structures {
        let mut fat = |i: usize, _: f64| {
            if paintable(lab[i], false) {
                lab[i] = label::OTHER;
                hu[i] = -100.0;
            }
        };
        match &s.kind {
            StructureKind::Tube(seg) => frame.capsule(seg.a, seg.b, seg.radius + s.margin, &mut fat),
            StructureKind::Ellipsoid { centre, semi } => ellipsoid(&frame, *centre, *semi, s.margin, &mut fat),
        }
    }
    for s in &structures {
        // over their own fat (or the abdomen's), not over an earlier structure
        let mut core = |i: usize, _: f64| {
            if (lab[i] == label::OTHER && hu[i] == -100.0) || paintable(lab[i], s.abdominal) {
                lab[i] = label::OTHER;
                hu[i] = s.hu;
            }
        };
        match &s.kind {
            StructureKind::Tube(seg) => frame.capsule(seg.a, seg.b, seg.radius, &mut core),
            StructureKind::Ellipsoid { centre, semi } => ellipsoid(&frame, *centre, *semi, 0.0, &mut core),
        }
    }
    // airway lumens, through their walls and each other's (open at the carina)
    for s in structures.iter().filter(|s| s.wall > 0.0) {
        if let StructureKind::Tube(seg) = &s.kind {
            frame.capsule(seg.a, seg.b, seg.radius - s.wall, |i, _| {
                if lab[i] == label::OTHER {
                    hu[i] = -1000.0;
                }
            });
        }
    }

    // Phase C: the pleural cavities: the largest connected part on each side is lung, any other
    // scrap (between mediastinal structures) mediastinal fat; the neck and abdomen are done.
    for k in 0..slices {
        for r in 0..rows {
            for c in 0..cols {
                let i = frame.index(k, r, c);
                match lab[i] {
                    W_CAVITY => lab[i] = label::code(label::AIR, if frame.x(c) > 0.0 { 0 } else { 1 }),
                    W_NECK | W_ABDOMEN => lab[i] = label::OTHER,
                    _ => {}
                }
            }
        }
    }
    for side in 0..2 {
        let code = label::code(label::AIR, side);
        for i in scraps(&lab, spec.shape, code) {
            lab[i] = label::OTHER;
            hu[i] = -100.0;
        }
    }

    // Phase D: vessels from the hila.
    let mut rng = Rng::new(spec.seed);
    for side in Side::BOTH {
        let sx = side.sign();
        let hilum = if side == Side::Left { [44.0, -4.0, lv.z(0.59)] } else { [-44.0, -10.0, lv.z(0.56)] };
        let dirs = [
            [0.3, 0.1, 1.0],
            [0.8, -0.2, 0.6],
            [1.0, 0.3, 0.2],
            [0.8, -0.6, -0.1],
            [0.5, 0.7, -0.5],
            [0.6, -0.3, -0.8],
            [0.3, 0.4, -1.0],
            [0.2, 0.9, 0.3],
            [0.9, 0.1, -0.6],
            [0.4, -0.8, 0.5],
            [0.7, 0.6, 0.7],
            [0.5, -0.5, -0.4],
            [1.0, -0.1, 0.0],
            [0.3, 0.8, -0.9],
        ];
        let mut segs = Vec::new();
        for d in dirs {
            tree(&mut rng, hilum, [sx * d[0], d[1], d[2]], 0.13 * lv.h, 3.0, 6, &mut segs);
        }
        let air = label::code(label::AIR, side.index());
        let vessel = label::code(label::VESSEL, side.index());
        for s in &segs {
            frame.capsule(s.a, s.b, s.radius, |i, _| {
                if lab[i] == air {
                    lab[i] = vessel;
                }
            });
        }
    }

    // Phase E: disease, in a fixed order.
    let mut order: Vec<&Disease> = spec.disease.iter().collect();
    order.sort_by_key(|d| match d {
        Disease::Effusion { .. } => 0,
        Disease::DependentConsolidation { .. } => 1,
        Disease::Mass { .. } => 2,
        Disease::GroundGlassSphere { .. } => 3,
    });
    for d in order {
        match d {
            Disease::Effusion { side, depth_mm } => effusion(&frame, &mut lab, *side, *depth_mm),
            Disease::DependentConsolidation { sides, depth_mm, ground_glass_mm } => {
                for side in sides {
                    consolidation(&frame, &mut lab, &mut rng, *side, *depth_mm, *ground_glass_mm);
                }
            }
            Disease::Mass { side, against, diameter_mm } => {
                mass(&frame, &mut lab, &smooth, *side, *against, *diameter_mm)
            }
            Disease::GroundGlassSphere { side, radius_mm } => ground_glass_sphere(&frame, &mut lab, *side, *radius_mm),
        }
    }

    // Phase F: HU of the pleural cavities, truth, blur, noise.
    let mut truth = Truth {
        voxel_ml: spec.spacing.iter().product::<f64>() / 1000.0,
        lung: [0; 2],
        opacity: [0; 2],
        effusion: [0; 2],
        consolidation: [0; 2],
        ground_glass: [0; 2],
        mass: [0; 2],
        bronchogram: [0; 2],
        vessel: [0; 2],
        lung_mask: [vec![0; n], vec![0; n]],
        opacity_mask: vec![0; n],
        effusion_mask: [vec![0; n], vec![0; n]],
        mass_mask: vec![0; n],
    };
    for k in 0..slices {
        let z = frame.z(k);
        for r in 0..rows {
            let y = frame.y(r);
            let gravity = ((y + 85.0) / 150.0).clamp(0.0, 1.0) as f32;
            for c in 0..cols {
                let i = frame.index(k, r, c);
                let Some((class, side)) = label::split(lab[i]) else { continue };
                let x = frame.x(c);
                let tex = |dx: f64| smooth.at([x + dx, y, z]);
                hu[i] = match class {
                    label::AIR => -862.0 + 35.0 * gravity + 30.0 * (tex(0.0) - 0.5),
                    label::VESSEL => 40.0,
                    label::EFFUSION => 10.0,
                    label::CONSOLIDATION => 20.0 + 30.0 * tex(111.0),
                    label::BRONCHOGRAM => -900.0,
                    label::GROUND_GLASS => -600.0 + 150.0 * tex(222.0),
                    label::MASS => 30.0 + 8.0 * (tex(333.0) - 0.5),
                    _ => -500.0,
                };
                if label::is_lung(class) {
                    truth.lung[side] += 1;
                    truth.lung_mask[side][i] = 1;
                }
                if label::is_opacity(class) {
                    truth.opacity[side] += 1;
                    truth.opacity_mask[i] = 1;
                }
                match class {
                    label::EFFUSION => {
                        truth.effusion[side] += 1;
                        truth.effusion_mask[side][i] = 1;
                    }
                    label::CONSOLIDATION => truth.consolidation[side] += 1,
                    label::GROUND_GLASS | label::GROUND_GLASS_SPHERE => truth.ground_glass[side] += 1,
                    label::MASS => {
                        truth.mass[side] += 1;
                        truth.mass_mask[i] = 1;
                    }
                    label::BRONCHOGRAM => truth.bronchogram[side] += 1,
                    label::VESSEL => truth.vessel[side] += 1,
                    _ => {}
                }
            }
        }
    }
    if spec.blur {
        blur_in_plane(&mut hu, spec.shape);
    }
    add_noise(&mut hu, spec.noise_hu, spec.seed);
    Thorax { hu, shape: spec.shape, spacing: spec.spacing, labels: lab, truth }
}

/// The voxels labelled `code` outside the largest 6-connected component of `code`.
fn scraps(lab: &[u8], shape: [usize; 3], code: u8) -> Vec<usize> {
    let [s, rows, cols] = shape;
    let mut seen = vec![false; lab.len()];
    let mut components: Vec<Vec<usize>> = Vec::new();
    let mut stack = Vec::new();
    for start in 0..lab.len() {
        if lab[start] != code || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let mut comp = Vec::new();
        while let Some(i) = stack.pop() {
            comp.push(i);
            for j in crate::grid::neighbours6(i, [s, rows, cols]) {
                if lab[j] == code && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        components.push(comp);
    }
    let largest = components.iter().enumerate().max_by_key(|(_, c)| c.len()).map(|(i, _)| i);
    components.into_iter().enumerate().filter(|(i, _)| Some(*i) != largest).flat_map(|(_, c)| c).collect()
}

/// First and last slice holding a pleural-cavity voxel of side index `side`.
fn cavity_extent(frame: &Frame, lab: &[u8], side: usize) -> Option<(usize, usize)> {
    let plane = frame.shape[1] * frame.shape[2];
    let has =
        |k: usize| lab[k * plane..(k + 1) * plane].iter().any(|&l| label::split(l).is_some_and(|(_, s)| s == side));
    let first = (0..frame.shape[0]).find(|&k| has(k))?;
    let last = (0..frame.shape[0]).rev().find(|&k| has(k))?;
    Some((first, last))
}

fn effusion(frame: &Frame, lab: &mut [u8], side: Side, depth_mm: f64) {
    let si = side.index();
    let Some((first, last)) = cavity_extent(frame, lab, si) else { return };
    let [_, rows, cols] = frame.shape;
    let top = 0.3 + depth_mm / 200.0;
    let height = (last - first).max(1) as f64;
    let in_cavity = |l: u8| label::split(l).is_some_and(|(_, s)| s == si);
    for k in first..=last {
        let zl = (k - first) as f64 / height;
        if zl >= top {
            break;
        }
        let fz = 1.0 - ((zl / top - 0.4).max(0.0) / 0.6).powi(2);
        // per column: the most posterior cavity voxel
        let post: Vec<Option<usize>> =
            (0..cols).map(|c| (0..rows).rev().find(|&r| in_cavity(lab[frame.index(k, r, c)]))).collect();
        let Some(deep) = (0..cols).filter(|&c| post[c].is_some()).max_by_key(|&c| post[c]) else { continue };
        let cols_with: Vec<usize> = (0..cols).filter(|&c| post[c].is_some()).collect();
        let (lo, hi) = (cols_with[0], cols_with[cols_with.len() - 1]);
        // lateral: away from the midline
        let (lateral, medial) = if side == Side::Right { (lo, hi) } else { (hi, lo) };
        for (c, p) in post.iter().enumerate() {
            let Some(rp) = *p else { continue };
            let towards = |end: usize| (c as f64 - deep as f64) / (end as f64 - deep as f64);
            let fx = if (c as f64 - deep as f64) * (lateral as f64 - deep as f64) > 0.0 {
                1.0 - 0.5 * towards(lateral).powi(2)
            } else if medial != deep && (c as f64 - deep as f64) * (medial as f64 - deep as f64) > 0.0 {
                1.0 - 0.4 * towards(medial).powi(2)
            } else {
                1.0
            };
            let t = depth_mm * fz * fx;
            let mut r = rp as isize;
            while r >= 0 {
                let i = frame.index(k, r as usize, c);
                if !in_cavity(lab[i]) || (rp - r as usize) as f64 * frame.spacing[1] >= t {
                    break;
                }
                lab[i] = label::code(label::EFFUSION, si);
                r -= 1;
            }
        }
    }
}

fn consolidation(frame: &Frame, lab: &mut [u8], rng: &mut Rng, side: Side, depth_mm: f64, gg_mm: f64) {
    let si = side.index();
    let Some((first, last)) = cavity_extent(frame, lab, si) else { return };
    let [_, rows, cols] = frame.shape;
    let height = (last - first).max(1) as f64;
    let air = label::code(label::AIR, si);
    let vessel = label::code(label::VESSEL, si);
    let effusion = label::code(label::EFFUSION, si);
    let cons = label::code(label::CONSOLIDATION, si);
    let gg = label::code(label::GROUND_GLASS, si);
    // bronchogram starts: (index, fraction of the layer's depth), upper part of the layer
    let mut starts = Vec::new();
    for k in first..=last {
        let zl = (k - first) as f64 / height;
        if zl >= 0.5 {
            break;
        }
        let fz = ((0.5 - zl) / 0.0625).clamp(0.0, 1.0).sqrt();
        let depth = depth_mm * fz;
        for c in 0..cols {
            // the most posterior lung voxel that is not effusion, behind any effusion
            let mut r = rows as isize - 1;
            let mut back = None;
            while r >= 0 {
                let l = lab[frame.index(k, r as usize, c)];
                if l == air || l == vessel {
                    back = Some(r as usize);
                    break;
                }
                if l != label::OTHER && l != effusion && label::split(l).is_some_and(|(_, s)| s == si) {
                    break; // another disease at the back: leave the column
                }
                r -= 1;
            }
            let Some(rp) = back else { continue };
            while r >= 0 {
                let i = frame.index(k, r as usize, c);
                if lab[i] != air && lab[i] != vessel {
                    break;
                }
                let dist = (rp - r as usize) as f64 * frame.spacing[1];
                if dist < depth {
                    lab[i] = cons;
                    if (0.3..0.7).contains(&(dist / depth)) && (0.25..0.4).contains(&zl) {
                        starts.push(i);
                    }
                } else if dist < depth + gg_mm {
                    lab[i] = gg;
                } else {
                    break;
                }
                r -= 1;
            }
        }
    }
    // air bronchograms: trees running caudally with lateral / posterior branches
    let bronchogram = label::code(label::BRONCHOGRAM, si);
    let plane = rows * cols;
    for _ in 0..10 {
        if starts.is_empty() {
            break;
        }
        let i = starts[(rng.next_u64() % starts.len() as u64) as usize];
        let (k, r, c) = (i / plane, (i % plane) / cols, i % cols);
        let p = [frame.x(c), frame.y(r), frame.z(k)];
        let sx = side.sign();
        let main = normalize([sx * rng.between(-0.25, 0.35), rng.between(-0.1, 0.15), -1.0]);
        let length = rng.between(45.0, 80.0);
        let radius = rng.between(1.1, 2.0);
        let mut segs = vec![Segment { a: p, b: add(p, main, length), radius }];
        for at in [0.3, 0.55, 0.8] {
            let from = add(p, main, length * at);
            let dir = normalize([sx * rng.between(0.5, 1.0), rng.between(0.0, 0.5), rng.between(-0.5, -0.1)]);
            segs.push(Segment { a: from, b: add(from, dir, rng.between(20.0, 40.0)), radius: radius * 0.8 });
        }
        for s in segs {
            frame.capsule(s.a, s.b, s.radius, |i, _| {
                if lab[i] == cons {
                    lab[i] = bronchogram;
                }
            });
        }
    }
}

fn is_lung_of(l: u8, side: usize) -> bool {
    label::split(l).is_some_and(|(class, s)| s == side && label::is_lung(class))
}

fn mass(frame: &Frame, lab: &mut [u8], smooth: &Smooth, side: Side, against: Against, diameter_mm: f64) {
    let si = side.index();
    let Some((first, last)) = cavity_extent(frame, lab, si) else { return };
    let k = first + ((last - first) as f64 * 0.45).round() as usize;
    let [_, rows, cols] = frame.shape;
    let radius = diameter_mm / 2.0;
    let sx = side.sign();
    let centre = match against {
        Against::Mediastinum => {
            // on the heart's row, the first lung voxel out from the midline
            let (r0, _) = frame.range(1, -30.0, 1e9);
            let r = r0.min(rows - 1);
            let mut cs: Vec<usize> = (0..cols).collect();
            if side == Side::Right {
                cs.reverse();
            }
            let Some(c) = cs.into_iter().find(|&c| frame.x(c) * sx > 0.0 && is_lung_of(lab[frame.index(k, r, c)], si))
            else {
                return;
            };
            [frame.x(c) + sx * 0.5 * radius, frame.y(r), frame.z(k)]
        }
        Against::PosteriorWall => {
            let (c0, _) = frame.range(2, sx * 75.0, 1e9);
            let c = c0.min(cols - 1);
            let Some(r) = (0..rows).rev().find(|&r| is_lung_of(lab[frame.index(k, r, c)], si)) else { return };
            [frame.x(c), frame.y(r) - 0.5 * radius, frame.z(k)]
        }
    };
    let code = label::code(label::MASS, si);
    frame.capsule(centre, centre, radius * 1.1, |i, d| {
        let (k, r, c) = (i / (rows * cols), (i % (rows * cols)) / cols, i % cols);
        let lobulated = radius * (0.92 + 0.16 * f64::from(smooth.at([frame.x(c) + 444.0, frame.y(r), frame.z(k)])));
        if d <= lobulated && is_lung_of(lab[i], si) {
            lab[i] = code;
        }
    });
}

fn ground_glass_sphere(frame: &Frame, lab: &mut [u8], side: Side, radius_mm: f64) {
    let si = side.index();
    let Some((first, last)) = cavity_extent(frame, lab, si) else { return };
    let k = first + ((last - first) as f64 * 0.6).round() as usize;
    let [_, rows, cols] = frame.shape;
    let (mut sx, mut sy, mut count) = (0.0, 0.0, 0usize);
    for r in 0..rows {
        for c in 0..cols {
            if is_lung_of(lab[frame.index(k, r, c)], si) {
                sx += frame.x(c);
                sy += frame.y(r);
                count += 1;
            }
        }
    }
    if count == 0 {
        return;
    }
    let centre = [sx / count as f64, sy / count as f64, frame.z(k)];
    let air = label::code(label::AIR, si);
    let vessel = label::code(label::VESSEL, si);
    let code = label::code(label::GROUND_GLASS_SPHERE, si);
    frame.capsule(centre, centre, radius_mm, |i, _| {
        if lab[i] == air || lab[i] == vessel {
            lab[i] = code;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const SMALL: ([usize; 3], [f64; 3]) = ([64, 240, 240], [5.0, 1.5, 1.5]);
    const FINE: ([usize; 3], [f64; 3]) = ([100, 256, 256], [2.5, 1.4, 1.4]);

    fn row(name: &str, t: &Thorax, secs: f64) {
        let tr = &t.truth;
        let ml = |v: [usize; 2]| format!("{:7.1} {:7.1}", tr.ml(v[0]), tr.ml(v[1]));
        eprintln!(
            "{name:24} lung {}  opacity {}  effusion {}  cons {}  gg {}  mass {}  bronchogram {}  vessel {}  ({:.2} s)",
            ml(tr.lung),
            ml(tr.opacity),
            ml(tr.effusion),
            ml(tr.consolidation),
            ml(tr.ground_glass),
            ml(tr.mass),
            ml(tr.bronchogram),
            ml(tr.vessel),
            secs
        );
    }

    #[test]
    fn phantom_standard_cases_build_with_plausible_truth() {
        for (shape, spacing) in [SMALL, FINE] {
            eprintln!("{shape:?} at {spacing:?} mm (mL, left right)");
            let mut healthy: Option<Truth> = None;
            for (name, spec) in ThoraxSpec::standard_cases(shape, spacing) {
                let t0 = Instant::now();
                let t = thorax(&spec);
                let secs = t0.elapsed().as_secs_f64();
                row(name, &t, secs);
                let tr = &t.truth;
                assert_eq!(t.hu.len(), shape.iter().product::<usize>());
                for side in 0..2 {
                    let ml = tr.ml(tr.lung[side]);
                    assert!(ml > 1000.0 && ml < 3000.0, "{name}: lung {side} {ml:.0} mL");
                }
                let h = healthy.get_or_insert_with(|| tr.clone());
                let has = |d: &dyn Fn(&Disease) -> bool| spec.disease.iter().any(d);
                let effusion = has(&|d| matches!(d, Disease::Effusion { .. }));
                if !effusion {
                    assert_eq!(tr.lung, h.lung, "{name}: without effusion the lung is the cavity");
                } else {
                    for side in 0..2 {
                        assert_eq!(tr.lung[side] + tr.effusion[side], h.lung[side], "{name}: cavity = lung + effusion");
                    }
                }
                for side in Side::BOTH {
                    let i = side.index();
                    let cons =
                        has(&|d| matches!(d, Disease::DependentConsolidation { sides, .. } if sides.contains(&side)));
                    let eff = has(&|d| matches!(d, Disease::Effusion { side: s, .. } if *s == side));
                    let mass = has(&|d| matches!(d, Disease::Mass { side: s, .. } if *s == side));
                    let gg = has(&|d| matches!(d, Disease::GroundGlassSphere { side: s, .. } if *s == side));
                    assert_eq!(tr.consolidation[i] > 0, cons, "{name} {side:?} consolidation");
                    assert_eq!(tr.bronchogram[i] > 0, cons, "{name} {side:?} bronchograms");
                    assert_eq!(tr.effusion[i] > 0, eff, "{name} {side:?} effusion");
                    assert_eq!(tr.mass[i] > 0, mass, "{name} {side:?} mass");
                    assert_eq!(tr.ground_glass[i] > 0, cons || gg, "{name} {side:?} ground glass");
                    assert_eq!(tr.opacity[i] > 0, cons || mass || gg, "{name} {side:?} opacity");
                    if mass {
                        let ml = tr.ml(tr.mass[i]);
                        assert!((18.0..36.0).contains(&ml), "{name}: mass {ml:.1} mL (33.5 for a whole sphere)");
                    }
                    assert!(tr.vessel[i] > 0);
                }
                // the labels and the masks agree with the counts
                assert_eq!(tr.opacity_mask.iter().filter(|&&v| v == 1).count(), tr.opacity[0] + tr.opacity[1]);
                assert_eq!(tr.lung_mask[0].iter().filter(|&&v| v == 1).count(), tr.lung[0]);
            }
        }
    }

    #[test]
    fn phantom_hu_of_tissues() {
        let (shape, spacing) = SMALL;
        let mut spec = ThoraxSpec::standard(shape, spacing);
        spec.noise_hu = 0.0;
        spec.blur = false;
        let t = thorax(&spec.with(Disease::DependentConsolidation {
            sides: vec![Side::Right],
            depth_mm: 25.0,
            ground_glass_mm: 10.0,
        }));
        let mean = |class: u8| {
            let (mut sum, mut n) = (0.0, 0usize);
            for (i, &l) in t.labels.iter().enumerate() {
                if label::split(l).is_some_and(|(c, _)| c == class) {
                    sum += f64::from(t.hu[i]);
                    n += 1;
                }
            }
            sum / n.max(1) as f64
        };
        let air = mean(label::AIR);
        assert!((-880.0..-820.0).contains(&air), "aerated lung {air:.0}");
        let cons = mean(label::CONSOLIDATION);
        assert!((20.0..50.0).contains(&cons), "consolidation {cons:.0}");
        let gg = mean(label::GROUND_GLASS);
        assert!((-600.0..-450.0).contains(&gg), "ground glass {gg:.0}");
        // bone, fat, liver and air outside are present
        let count = |lo: f32, hi: f32| t.hu.iter().filter(|&&v| v >= lo && v <= hi).count();
        assert!(count(280.0, 800.0) > 10_000, "bone");
        assert!(count(-110.0, -90.0) > 100_000, "fat");
        assert!(count(59.0, 61.0) > 50_000, "liver");
        assert!(t.hu[0] == -1000.0, "air outside");
    }

    /// No air outside the pleural cavities (trachea, bronchi, stomach bubble, outside, table)
    /// touches the lung: a threshold cannot leak out of it.
    /// Towards the apex the lungs narrow from the front and the sides and keep to the posterior
    /// chest wall (as the bundled sample's top slices show), so that no soft tissue lies between
    /// the upper lobes and the posterior ribs.
    #[test]
    fn phantom_apex_keeps_to_the_posterior_wall() {
        let (shape, spacing) = SMALL;
        let t = thorax(&ThoraxSpec::standard(shape, spacing));
        let frame = Frame { shape, spacing };
        let lv = Levels::new(&frame);
        let [slices, rows, cols] = shape;
        // per slice and side, the lung's most posterior row at x = +-50 mm and its area
        let back = |k: usize, side: usize| {
            let c = (0..cols).min_by(|&a, &b| {
                let x = if side == 0 { 50.0 } else { -50.0 };
                (frame.x(a) - x).abs().total_cmp(&(frame.x(b) - x).abs())
            })?;
            (0..rows).rev().find(|&r| t.truth.lung_mask[side][frame.index(k, r, c)] != 0)
        };
        let area = |k: usize, side: usize| {
            (0..rows * cols).filter(|&p| t.truth.lung_mask[side][k * rows * cols + p] != 0).count()
        };
        let mid = (0..slices).find(|&k| lv.u(frame.z(k)) > 0.6).expect("mid slice");
        let mut upper = 0;
        for k in (0..slices).filter(|&k| (0.8..0.95).contains(&lv.u(frame.z(k)))) {
            for side in 0..2 {
                let (Some(b), Some(b0)) = (back(k, side), back(mid, side)) else { panic!("slice {k}: no lung") };
                assert!(area(k, side) < area(mid, side), "slice {k}: the lung narrows towards the apex");
                let gap_mm = (b0 as f64 - b as f64) * spacing[1];
                assert!(
                    gap_mm <= 6.0,
                    "slice {k} side {side}: the apex lies {gap_mm} mm in front of the posterior wall"
                );
                upper += 1;
            }
        }
        assert!(upper >= 2, "no slice through the upper lobes");
    }

    #[test]
    fn phantom_lung_touches_no_other_air() {
        let (shape, spacing) = SMALL;
        let mut spec = ThoraxSpec::standard(shape, spacing);
        spec.noise_hu = 0.0;
        spec.blur = false;
        let t = thorax(&spec);
        let mut touching = 0;
        for i in 0..t.hu.len() {
            if label::split(t.labels[i]).is_some() {
                touching += crate::grid::neighbours6(i, shape)
                    .filter(|&j| t.labels[j] == label::OTHER && t.hu[j] < -400.0)
                    .count();
            }
        }
        assert_eq!(touching, 0, "lung voxels next to air outside the lungs");
        // and the two lungs do not touch each other
        let cols = shape[2];
        let both = (0..t.hu.len())
            .filter(|&i| t.truth.lung_mask[0][i] == 1 && (i % cols > 0 && t.truth.lung_mask[1][i - 1] == 1));
        assert_eq!(both.count(), 0);
    }

    /// Near the base the lung wraps the dome as a posterior/lateral crescent around the liver.
    #[test]
    fn phantom_base_slices_show_a_crescent_around_the_liver() {
        let (shape, spacing) = SMALL;
        let t = thorax(&ThoraxSpec::standard(shape, spacing));
        let frame = Frame { shape, spacing };
        let lv = Levels::new(&frame);
        let px = pixels(&frame, &lv);
        let [_, rows, cols] = shape;
        let (first, last) = cavity_extent(&frame, &t.labels, 1).expect("right lung");
        let lung = |k: usize, r: usize, c: usize| t.truth.lung_mask[1][frame.index(k, r, c)] == 1;
        let liver = |k: usize, r: usize, c: usize| {
            let p = px[r * cols + c];
            p.kind == PX_INTERIOR && p.organ == ORG_LIVER && frame.z(k) <= f64::from(p.diaphragm_z) - DIAPHRAGM
        };
        let area =
            |k: usize| (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).filter(|&(r, c)| lung(k, r, c)).count();
        let mid = area((first + last) / 2);
        let mut crescent_slices = 0;
        for k in first..first + (last - first) / 3 {
            // columns with liver in front of lung, rows with liver medial to lung
            let behind = (0..cols / 2)
                .filter(|&c| {
                    let front = (0..rows).find(|&r| lung(k, r, c));
                    front.is_some_and(|f| (0..f).any(|r| liver(k, r, c)))
                })
                .count();
            let lateral = (0..rows)
                .filter(|&r| {
                    let inner = (0..cols / 2).rev().find(|&c| lung(k, r, c));
                    inner.is_some_and(|i| (i..cols / 2).any(|c| liver(k, r, c)))
                })
                .count();
            let a = area(k);
            eprintln!(
                "slice {k}: lung behind liver in {behind} columns, beside it in {lateral} rows, area {a} (mid {mid})"
            );
            if behind > 10 && lateral > 10 && a * 2 < mid {
                crescent_slices += 1;
            }
        }
        assert!(crescent_slices >= 2, "{crescent_slices} base slices with lung behind and beside the liver");
    }

    /// Along a ring through the rib band, slices through the lower and upper half cut the ribs
    /// into separate arcs covering 30-70 % of the lateral/posterior circumference.
    #[test]
    fn phantom_ribs_are_interrupted() {
        let (shape, spacing) = SMALL;
        let mut spec = ThoraxSpec::standard(shape, spacing);
        spec.noise_hu = 0.0;
        let t = thorax(&spec);
        let frame = Frame { shape, spacing };
        let lv = Levels::new(&frame);
        let px = pixels(&frame, &lv);
        let cols = shape[2];
        for u in [0.25, 0.4, 0.6] {
            let k = ((lv.z(u) / spacing[0]) - 0.5).round() as usize;
            for sx in [-1.0, 1.0] {
                let mut samples = Vec::new();
                let steps = 400;
                for step in 0..=steps {
                    let phi = 0.3 + (2.3 - 0.3) * step as f64 / steps as f64;
                    // the middle of the rib band at this angle, found along the ray
                    let mut band = Vec::new();
                    for t_mm in 0..400 {
                        let rad = t_mm as f64 * 0.5;
                        let (x, y) = (sx * phi.sin() * rad, BODY_YC + phi.cos() * rad);
                        let (r0, r1) = frame.range(1, y - spacing[1] / 2.0, y + spacing[1] / 2.0);
                        let (c0, c1) = frame.range(2, x - spacing[2] / 2.0, x + spacing[2] / 2.0);
                        if r1 > r0 && c1 > c0 && px[r0 * cols + c0].kind == PX_RIB {
                            band.push((r0, c0));
                        }
                    }
                    let Some(&(r, c)) = band.get(band.len() / 2) else { continue };
                    samples.push(t.hu[frame.index(k, r, c)] > 250.0);
                }
                let arcs = samples.windows(2).filter(|w| w[1] && !w[0]).count() + usize::from(samples[0]);
                let cover = samples.iter().filter(|&&b| b).count() as f64 / samples.len() as f64;
                eprintln!("u {u}: side {sx}: {arcs} rib arcs, {:.0} % bone", 100.0 * cover);
                assert!(arcs >= 2, "u {u}: {arcs} arcs");
                assert!((0.3..0.7).contains(&cover), "u {u}: rib cover {cover:.2}");
            }
        }
    }

    #[test]
    fn phantom_effusion_is_a_posterior_meniscus_thickest_at_the_base() {
        let (shape, spacing) = SMALL;
        let t =
            thorax(&ThoraxSpec::standard(shape, spacing).with(Disease::Effusion { side: Side::Right, depth_mm: 40.0 }));
        let frame = Frame { shape, spacing };
        let [s, rows, cols] = shape;
        let mask = &t.truth.effusion_mask[1];
        // greatest thickness (mm, along a column) per slice
        let thickness: Vec<f64> = (0..s)
            .map(|k| {
                (0..cols).map(|c| (0..rows).filter(|&r| mask[frame.index(k, r, c)] == 1).count()).max().unwrap_or(0)
                    as f64
                    * spacing[1]
            })
            .collect();
        let slices: Vec<usize> = (0..s).filter(|&k| thickness[k] > 0.0).collect();
        eprintln!("thickness per slice (mm): {:?}", slices.iter().map(|&k| thickness[k]).collect::<Vec<_>>());
        assert!(slices.len() >= 6, "effusion on {} slices", slices.len());
        // thickest low down (above the thin costophrenic recess), thinning upwards
        let max = thickness.iter().copied().fold(0.0, f64::max);
        assert!((32.0..=40.0 + spacing[1]).contains(&max), "greatest thickness {max} mm for 40 mm");
        let at_max = slices.iter().position(|&k| thickness[k] == max).expect("max");
        assert!(at_max * 5 < slices.len() * 3, "thickest on effusion slice {at_max} of {}", slices.len());
        let q = slices.len() / 4;
        let high = slices[slices.len() - q..].iter().map(|&k| thickness[k]).fold(0.0, f64::max);
        assert!(high < 0.75 * max, "highest quarter {high} mm");
        let top = thickness[slices[slices.len() - 1]];
        assert!(top < 0.3 * max, "top slice {top} mm");
        // posterior: the effusion's mean row lies behind the lung's on its middle slice
        let k = slices[slices.len() / 2];
        let mean_y = |m: &[u8]| {
            let ys: Vec<f64> =
                (0..rows * cols).filter(|&j| m[k * rows * cols + j] == 1).map(|j| frame.y(j / cols)).collect();
            ys.iter().sum::<f64>() / ys.len().max(1) as f64
        };
        assert!(mean_y(mask) > mean_y(&t.truth.lung_mask[1]) + 20.0);
        assert_eq!(t.truth.effusion[0], 0);
    }

    /// The masses touch what they abut over a broad contact: many mass voxels next to tissue
    /// outside the pleural cavity, over several slices.
    #[test]
    fn phantom_masses_abut_broadly() {
        let (shape, spacing) = SMALL;
        let [s, rows, cols] = shape;
        for against in [Against::Mediastinum, Against::PosteriorWall] {
            for side in Side::BOTH {
                let t = thorax(&ThoraxSpec::standard(shape, spacing).with(Disease::Mass {
                    side,
                    against,
                    diameter_mm: 40.0,
                }));
                let frame = Frame { shape, spacing };
                let mut contact = 0;
                let mut contact_slices = std::collections::BTreeSet::new();
                let (mut cx, mut cy, mut mx, mut my) = (0.0, 0.0, 0.0, 0.0);
                for k in 0..s {
                    for r in 1..rows - 1 {
                        for c in 1..cols - 1 {
                            let i = frame.index(k, r, c);
                            if t.truth.mass_mask[i] == 0 {
                                continue;
                            }
                            mx += frame.x(c).abs();
                            my += frame.y(r);
                            let next = [i - 1, i + 1, i - cols, i + cols];
                            if next.iter().any(|&j| t.labels[j] == label::OTHER) {
                                contact += 1;
                                contact_slices.insert(k);
                                cx += frame.x(c).abs();
                                cy += frame.y(r);
                            }
                        }
                    }
                }
                let n = t.truth.mass[side.index()] as f64;
                let (cx, cy, mx, my) = (cx / f64::from(contact.max(1)), cy / f64::from(contact.max(1)), mx / n, my / n);
                eprintln!(
                    "{against:?} {side:?}: {contact} contact voxels on {} slices; contact |x| {cx:.0} y {cy:.0}, mass |x| {mx:.0} y {my:.0} mm",
                    contact_slices.len()
                );
                assert!(contact >= 40 && contact_slices.len() >= 3, "{against:?} {side:?}: {contact} contact voxels");
                match against {
                    // the contact lies medial to the mass, or behind it
                    Against::Mediastinum => assert!(cx < mx - 5.0),
                    Against::PosteriorWall => assert!(cy > my + 5.0),
                }
            }
        }
    }
}
