//! Mask geometry helpers.

/// The peripheral shell of a mask: voxels inside the mask whose in-plane distance to the mask's
/// boundary is at most `depth_mm`, computed per slice with a rectangular (Chebyshev) erosion of
/// `depth_mm / pixel spacing` pixels along rows and columns. `mask` and the result are
/// `[slices, rows, cols]` row-major; `spacing_mm` is `[slice, row, col]`. The FOV edge counts as
/// boundary. In-plane only: the apical and diaphragmatic surfaces are not counted as pleura.
pub fn peripheral_shell(mask: &[u8], shape: [usize; 3], spacing_mm: [f64; 3], depth_mm: f64) -> Vec<u8> {
    let [slices, rows, cols] = shape;
    let radius = |spacing: f64| if spacing > 0.0 { (depth_mm / spacing).round() as usize } else { 0 };
    let (r_row, r_col) = (radius(spacing_mm[1]), radius(spacing_mm[2]));
    let mut out = vec![0u8; mask.len()];
    let plane = rows * cols;
    let mut eroded = vec![0u8; plane];
    for k in 0..slices {
        let m = &mask[k * plane..(k + 1) * plane];
        if m.iter().all(|&v| v == 0) {
            continue;
        }
        // along each row (columns direction), then along each column (rows direction)
        let mut horizontal = vec![0u8; plane];
        for r in 0..rows {
            erode_line(|c| m[r * cols + c] != 0, cols, r_col, |c, v| horizontal[r * cols + c] = v);
        }
        for c in 0..cols {
            erode_line(|r| horizontal[r * cols + c] != 0, rows, r_row, |r, v| eroded[r * cols + c] = v);
        }
        let o = &mut out[k * plane..(k + 1) * plane];
        for i in 0..plane {
            o[i] = u8::from(m[i] != 0 && eroded[i] == 0);
        }
    }
    out
}

/// 1D erosion: a position survives when every position within `radius` is inside (and inside
/// the line). Two passes compute the run length to the nearest outside position on each side.
fn erode_line(inside: impl Fn(usize) -> bool, len: usize, radius: usize, mut set: impl FnMut(usize, u8)) {
    let mut left = vec![0usize; len];
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
}
