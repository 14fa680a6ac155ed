//! Lungs cut by the field of view.
//!
//! A reconstruction field of view narrower than the chest (a large patient, a targeted
//! reconstruction) cuts the lungs at the left and right image edges. The model takes air that
//! reaches the image border for air outside the body, so the cut lungs lose what touches the edge
//! and more: on the bundled sample cropped 30 px into each lung, both lungs read 490 mL instead of
//! 2807 mL, and the tumour's opacity 0 mL (involvement 0.0 %, where the uncut scan reads 4.3 %).
//! Such a result must say that it cannot be trusted ([`caution`]).
//!
//! The sign looked for, slice by slice, on the left and right image columns (the lateral edges;
//! the posterior and anterior ones hold the table): a run of air (< [`AIR_HU`]) at least
//! [`MIN_AIR_MM`] long between tissue on both sides along the column, whose in-plane connected air
//! touches the image border nowhere else, is lung, not gas (fewer than half of it below
//! [`GAS_HU`], the model's rule for its lung components), and holds some of the lung masks. Air
//! outside the body reaches the border around the body too; the air between the body and the
//! table, which a narrow field of view can close off, is gas (-1000 HU); the table's foam core,
//! which the edge cuts as well, has the density of lung but lies in no lung mask. The aerated lung
//! the edge cuts is enclosed by the body but for that run, and what the model kept of that lung
//! is part of it.

/// Air: below this (HU), as the model's aerated-lung threshold.
pub const AIR_HU: f32 = -400.0;
/// Shortest run of air along the edge column that counts (mm): smaller air is noise or a vessel
/// between two ribs, not a lung.
pub const MIN_AIR_MM: f64 = 10.0;
/// Gas, not lung parenchyma: below this (HU), as the model's and the pleural-cavity step's rule.
pub const GAS_HU: f32 = crate::cavity::GAS_HU;

/// The slices (canonical indices) in which the left or the right image edge cuts a lung. `hu`
/// and each of `lungs` (the lung masks, non-zero inside) are `[slices, rows, cols]` (`shape`);
/// `row_mm` is the spacing between rows.
pub fn cut_slices(hu: &[f32], lungs: &[&[u8]], shape: [usize; 3], row_mm: f64) -> Vec<usize> {
    let [slices, rows, cols] = shape;
    let plane = rows * cols;
    if hu.len() != slices * plane || lungs.iter().any(|m| m.len() != hu.len()) || rows < 3 || cols < 3 {
        return Vec::new();
    }
    let min_run = (MIN_AIR_MM / row_mm.max(1e-3)).ceil() as usize;
    (0..slices)
        .filter(|&k| {
            let at = k * plane..(k + 1) * plane;
            let in_lung = |p: usize| lungs.iter().any(|m| m[at.start + p] != 0);
            [0, cols - 1].into_iter().any(|c| edge_cuts_lung(&hu[at.clone()], &in_lung, rows, cols, c, min_run))
        })
        .collect()
}

/// Whether column `c` (an edge) of a slice holds a run of at least `min_run` air pixels with
/// tissue before and after it along the column, whose 4-connected air is a cut lung ([`enclosed`]).
fn edge_cuts_lung(
    slice: &[f32],
    in_lung: &dyn Fn(usize) -> bool,
    rows: usize,
    cols: usize,
    c: usize,
    min_run: usize,
) -> bool {
    let air = |r: usize, c: usize| slice[r * cols + c] < AIR_HU;
    let mut r = 0;
    while r < rows {
        if !air(r, c) {
            r += 1;
            continue;
        }
        let start = r;
        while r < rows && air(r, c) {
            r += 1;
        }
        // tissue on both sides along the edge, and long enough to be a lung
        if start > 0 && r < rows && r - start >= min_run && enclosed(slice, in_lung, rows, cols, (start, r), c) {
            return true;
        }
    }
    false
}

/// Whether the air connected (4-connected, in-plane) to the run `rows.0..rows.1` of edge column
/// `c` touches the image border only in that run, is lung (fewer than half of it below
/// [`GAS_HU`]) and holds a pixel of a lung mask (`in_lung`).
fn enclosed(
    slice: &[f32],
    in_lung: &dyn Fn(usize) -> bool,
    rows: usize,
    cols: usize,
    (r0, r1): (usize, usize),
    c: usize,
) -> bool {
    let (mut size, mut gas, mut lung) = (0usize, 0usize, false);
    let mut seen = vec![false; rows * cols];
    let mut stack: Vec<usize> = (r0..r1).map(|r| r * cols + c).collect();
    for &p in &stack {
        seen[p] = true;
    }
    while let Some(p) = stack.pop() {
        size += 1;
        gas += usize::from(slice[p] < GAS_HU);
        lung |= in_lung(p);
        let (r, cc) = (p / cols, p % cols);
        let on_border = r == 0 || r == rows - 1 || cc == 0 || cc == cols - 1;
        if on_border && !(cc == c && (r0..r1).contains(&r)) {
            return false;
        }
        for q in crate::cavity::neighbours4(p, rows, cols) {
            if !seen[q] && slice[q] < AIR_HU {
                seen[q] = true;
                stack.push(q);
            }
        }
    }
    lung && gas * 2 < size
}

/// What the reader must be told when the field of view cuts the lungs: `None` when no slice of
/// `hu` shows it ([`cut_slices`]).
pub fn caution(hu: &[f32], lungs: &[&[u8]], shape: [usize; 3], row_mm: f64) -> Option<String> {
    let cut = cut_slices(hu, lungs, shape, row_mm);
    let (first, last) = (*cut.first()?, *cut.last()?);
    Some(format!(
        "the field of view cuts through the lungs (lung at the left or right image edge, seen in {} slice(s) between \
         {} and {}): what lies outside the image is not measured and lung next to the edge may be taken for air \
         outside the body; lung volumes, involvement, class and score may be wrong",
        cut.len(),
        first + 1,
        last + 1
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One 60 x 80 slice (1 mm pixels): outside air, an elliptic body of soft tissue from column
    /// `body.0` to `body.1` (may reach beyond the image), holding two lungs of air 16 mm wide at
    /// columns `lungs`.
    fn slice(body: (f64, f64), lungs: [f64; 2]) -> Vec<f32> {
        let (rows, cols) = (60usize, 80usize);
        let (cx, half_w) = ((body.0 + body.1) / 2.0, (body.1 - body.0) / 2.0);
        let mut hu = vec![-1000.0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                let (dx, dy) = ((c as f64 - cx) / half_w, (r as f64 - 30.0) / 22.0);
                if dx * dx + dy * dy <= 1.0 {
                    hu[r * cols + c] = 40.0;
                    if lungs.iter().any(|&l| (c as f64 - l).abs() <= 8.0 && (r as f64 - 30.0).abs() <= 12.0) {
                        hu[r * cols + c] = -850.0;
                    }
                }
            }
        }
        hu
    }

    /// The slices said for `hu`, with a lung mask of the aerated (-950..-400 HU) pixels, as the
    /// model's would be, unless `masked` is false (no lung mask at all).
    fn cut(hu: &[f32], slices: usize, masked: bool) -> Vec<usize> {
        let mask: Vec<u8> = hu.iter().map(|&v| u8::from(masked && (-950.0..-400.0).contains(&v))).collect();
        cut_slices(hu, &[&mask], [slices, 60, 80], 1.0)
    }

    #[test]
    fn only_lungs_the_edge_cuts_are_said() {
        // the whole chest in the image: nothing
        let whole = slice((5.0, 75.0), [25.0, 55.0]);
        assert_eq!(cut(&whole, 1, true), Vec::<usize>::new());
        // the body wider than the image, the lungs inside it: nothing (the edge cuts tissue only)
        let body_cut = slice((-10.0, 90.0), [25.0, 55.0]);
        assert!(body_cut[30 * 80].is_sign_positive(), "the edge cuts the body");
        assert_eq!(cut(&body_cut, 1, true), Vec::<usize>::new());
        // the left image edge through a lung: said, for that slice; not when no lung mask holds it
        let lung_cut = slice((-20.0, 90.0), [3.0, 55.0]);
        let volume: Vec<f32> = [whole.clone(), lung_cut, whole].concat();
        assert_eq!(cut(&volume, 3, true), vec![1]);
        assert_eq!(cut(&volume, 3, false), Vec::<usize>::new());
        let mask: Vec<u8> = volume.iter().map(|&v| u8::from((-950.0..-400.0).contains(&v))).collect();
        let said = caution(&volume, &[&mask], [3, 60, 80], 1.0).expect("caution");
        assert!(said.contains("seen in 1 slice(s) between 2 and 2"), "{said}");
        // outside air reaching the edge between an arm and the chest is outside air, not a lung:
        // it touches the border elsewhere too
        let mut arm = slice((5.0, 75.0), [25.0, 55.0]);
        for r in (10..20).chain(40..50) {
            for c in 0..6 {
                arm[r * 80 + c] = 40.0;
            }
        }
        assert_eq!(cut(&arm, 1, true), Vec::<usize>::new());
        // an enclosed pocket of lung the edge cuts over less than MIN_AIR_MM is not said; the
        // same pocket over 12 mm is; a pocket of gas (the air between the body and the table,
        // closed off by the edge) never
        for (rows, hu, said) in [(24..30, -900.0, false), (24..36, -900.0, true), (24..36, -1000.0, false)] {
            let mut pocket = slice((-10.0, 90.0), [25.0, 55.0]);
            for r in rows {
                for c in 0..4 {
                    pocket[r * 80 + c] = hu;
                }
            }
            assert_eq!(!cut(&pocket, 1, true).is_empty(), said, "{hu} HU");
        }
        // a shape mismatch says nothing
        assert_eq!(cut_slices(&slice((5.0, 75.0), [25.0, 55.0]), &[&[0u8; 3]], [1, 60, 80], 1.0), Vec::<usize>::new());
    }
}
