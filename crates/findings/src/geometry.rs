//! Mask geometry helpers.

/// The peripheral shell of a mask: voxels inside the mask whose in-plane distance to the mask's
/// boundary is at most `depth_mm`, computed per slice with a rectangular (Chebyshev) erosion of
/// `depth_mm / pixel spacing` pixels along rows and columns. `mask` and the result are
/// `[slices, rows, cols]` row-major; `spacing_mm` is `[slice, row, col]`. The FOV edge counts as
/// boundary. In-plane only: the apical and diaphragmatic surfaces are not counted as pleura.
pub fn peripheral_shell(mask: &[u8], shape: [usize; 3], spacing_mm: [f64; 3], depth_mm: f64) -> Vec<u8> {
    let [slices, rows, cols] = shape;
    let mut out = vec![0u8; mask.len()];
    let plane = rows * cols;
    for k in 0..slices {
        let o = &mut out[k * plane..(k + 1) * plane];
        slice_shell(&mask[k * plane..(k + 1) * plane], [rows, cols], spacing_mm, depth_mm, |p| o[p] = 1);
    }
    out
}

/// [`peripheral_shell`] of one slice (`m` `[rows, cols]`): calls `f` with the offset of each of
/// its pixels in the shell, row by row.
pub(crate) fn slice_shell(
    m: &[u8],
    [rows, cols]: [usize; 2],
    spacing_mm: [f64; 3],
    depth_mm: f64,
    mut f: impl FnMut(usize),
) {
    let radius = |spacing: f64| if spacing > 0.0 { (depth_mm / spacing).round() as usize } else { 0 };
    let (r_row, r_col) = (radius(spacing_mm[1]), radius(spacing_mm[2]));
    // the mask's bounding box in this slice: outside it nothing is inside, so eroding the box
    // alone (its edges behave like the FOV edge: outside counts as boundary) gives the same
    let Some((r0, r1, c0, c1)) = bounding_box(m, rows, cols) else { return };
    let (h, w) = (r1 - r0 + 1, c1 - c0 + 1);
    let at = |r: usize, c: usize| (r0 + r) * cols + c0 + c;
    // along each row (columns direction), then along each column (rows direction)
    let mut horizontal = vec![0u8; h * w];
    let mut left = Vec::with_capacity(w);
    for r in 0..h {
        let row = &m[at(r, 0)..at(r, 0) + w];
        erode_line(|c| row[c] != 0, w, r_col, &mut left, |c, v| horizontal[r * w + c] = v);
    }
    // the columns side by side, row after row: each column's run of inside pixels ending at the
    // row going down, then starting at it going up (as `erode_line` along a column)
    let mut down = vec![0usize; w * h];
    let mut run = vec![0usize; w];
    for r in 0..h {
        for c in 0..w {
            run[c] = if horizontal[r * w + c] != 0 { run[c] + 1 } else { 0 };
            down[r * w + c] = run[c];
        }
    }
    let mut eroded = vec![0u8; h * w];
    run.iter_mut().for_each(|v| *v = 0);
    for r in (0..h).rev() {
        for c in 0..w {
            run[c] = if horizontal[r * w + c] != 0 { run[c] + 1 } else { 0 };
            eroded[r * w + c] = u8::from(down[r * w + c] > r_row && run[c] > r_row);
        }
    }
    for r in 0..h {
        for c in 0..w {
            let i = at(r, c);
            if m[i] != 0 && eroded[r * w + c] == 0 {
                f(i);
            }
        }
    }
}

/// (first row, last row, first column, last column) holding a non-zero value of a `[rows, cols]`
/// plane; `None` when it is all zero.
fn bounding_box(m: &[u8], rows: usize, cols: usize) -> Option<(usize, usize, usize, usize)> {
    let mut b: Option<(usize, usize, usize, usize)> = None;
    for r in 0..rows {
        let line = &m[r * cols..(r + 1) * cols];
        let Some(first) = line.iter().position(|&v| v != 0) else { continue };
        let last = line.iter().rposition(|&v| v != 0).unwrap_or(first);
        b = Some(match b {
            None => (r, r, first, last),
            Some((r0, _, c0, c1)) => (r0, r, c0.min(first), c1.max(last)),
        });
    }
    b
}

/// 1D erosion: a position survives when every position within `radius` is inside (and inside
/// the line). Two passes compute the run length to the nearest outside position on each side.
/// `left` is scratch space.
fn erode_line(
    inside: impl Fn(usize) -> bool,
    len: usize,
    radius: usize,
    left: &mut Vec<usize>,
    mut set: impl FnMut(usize, u8),
) {
    left.clear();
    left.resize(len, 0);
    let mut run = 0usize;
    for (i, l) in left.iter_mut().enumerate() {
        run = if inside(i) { run + 1 } else { 0 };
        *l = run;
    }
    run = 0;
    for i in (0..len).rev() {
        run = if inside(i) { run + 1 } else { 0 };
        // run lengths count the position itself: > radius means `radius` neighbours inside
        set(i, u8::from(left[i] > radius && run > radius));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_of_a_square() {
        // one slice, 20x20 square in a 30x30 image, 1 mm pixels, 3 mm depth
        let (rows, cols) = (30, 30);
        let mut m = vec![0u8; rows * cols];
        for r in 5..25 {
            for c in 5..25 {
                m[r * cols + c] = 1;
            }
        }
        let s = peripheral_shell(&m, [1, rows, cols], [1.0, 1.0, 1.0], 3.0);
        let inside: usize = m.iter().map(|&v| v as usize).sum();
        let shell: usize = s.iter().map(|&v| v as usize).sum();
        // core that survives: pixels with >= 3 inside neighbours each way: 14x14
        assert_eq!(inside - shell, 14 * 14);
        assert_eq!(s[5 * cols + 5], 1);
        assert_eq!(s[15 * cols + 15], 0);
    }

    /// The separable erosion written out pixel by pixel, over the whole plane.
    fn naive_shell(m: &[u8], rows: usize, cols: usize, rr: isize, rc: isize) -> Vec<u8> {
        let inside = |r: isize, c: isize| {
            r >= 0 && c >= 0 && (r as usize) < rows && (c as usize) < cols && m[r as usize * cols + c as usize] != 0
        };
        let horizontal = |r: isize, c: isize| (-rc..=rc).all(|d| inside(r, c + d));
        let mut out = vec![0u8; rows * cols];
        for r in 0..rows as isize {
            for c in 0..cols as isize {
                let eroded = (-rr..=rr).all(|d| {
                    let rr2 = r + d;
                    rr2 >= 0 && (rr2 as usize) < rows && horizontal(rr2, c)
                });
                out[r as usize * cols + c as usize] = u8::from(inside(r, c) && !eroded);
            }
        }
        out
    }

    #[test]
    fn bounding_box_erosion_equals_the_whole_plane_erosion() {
        // an irregular blob touching the right edge, and a second slice left empty
        let (rows, cols) = (40, 32);
        let mut m = vec![0u8; 2 * rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                let (y, x) = (r as f64 - 18.0, c as f64 - 24.0);
                if (y * y) / 150.0 + (x * x) / 90.0 < 1.0 || (r > 30 && c > 20 && c < 26) {
                    m[r * cols + c] = 1;
                }
            }
        }
        let s = peripheral_shell(&m, [2, rows, cols], [2.0, 0.7, 1.0], 2.5);
        // radii: 2.5 / 0.7 -> 4 rows, 2.5 / 1.0 -> 3 columns (rounded)
        assert_eq!(&s[..rows * cols], naive_shell(&m[..rows * cols], rows, cols, 4, 3).as_slice());
        assert!(s[rows * cols..].iter().all(|&v| v == 0));
        assert!(s.contains(&1));
    }
}
