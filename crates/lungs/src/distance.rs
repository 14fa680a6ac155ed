//! Exact Euclidean distance transforms on a grid of any number of axes with its own spacing per
//! axis, by the separable transform of Felzenszwalb & Huttenlocher, "Distance transforms of
//! sampled functions", Theory of Computing 2012;8:415-428: a lower envelope of parabolas along
//! each axis in turn.

/// Squared Euclidean distance of every cell of a row-major grid of `dims` (the last axis
/// fastest) to the nearest cell where `feature` holds, in the unit of `spacing` (one value per
/// axis: mm per cell, or 1.0 for cells); `f64::INFINITY` where no cell holds.
///
/// # Panics
/// When `dims` and `spacing` differ in length or `feature` does not hold `dims`' cells.
pub(crate) fn squared(feature: &[bool], dims: &[usize], spacing: &[f64]) -> Vec<f64> {
    assert_eq!(dims.len(), spacing.len(), "one spacing per axis");
    assert_eq!(feature.len(), dims.iter().product::<usize>(), "feature holds the grid");
    let mut d: Vec<f64> = feature.iter().map(|&f| if f { 0.0 } else { f64::INFINITY }).collect();
    let (mut line, mut out) = (Vec::new(), Vec::new());
    // the lower envelope's parabolas and their boundaries, reused from line to line
    let (mut v, mut z) = (Vec::new(), Vec::new());
    for (axis, (&n, &step)) in dims.iter().zip(spacing).enumerate() {
        let stride: usize = dims[axis + 1..].iter().product();
        let outer = d.len() / (n * stride).max(1);
        for o in 0..outer {
            for inner in 0..stride {
                let start = o * n * stride + inner;
                line.clear();
                line.extend((0..n).map(|q| d[start + q * stride]));
                envelope(&line, step * step, &mut out, (&mut v, &mut z));
                for (q, &v) in out.iter().enumerate() {
                    d[start + q * stride] = v;
                }
            }
        }
    }
    d
}

/// One axis: `out[q] = min over p of s2 (q - p)^2 + f[p]`; `v` and `z` (the parabolas of the
/// lower envelope and their boundaries) are scratch space.
fn envelope(f: &[f64], s2: f64, out: &mut Vec<f64>, (v, z): (&mut Vec<usize>, &mut Vec<f64>)) {
    let n = f.len();
    out.clear();
    out.resize(n, f64::INFINITY);
    // parabola vertices (finite ones only) and the boundaries between them
    v.clear();
    z.clear();
    let key = |p: usize| f[p] + s2 * (p * p) as f64;
    for q in (0..n).filter(|&q| f[q].is_finite()) {
        while let Some(&p) = v.last() {
            let s = (key(q) - key(p)) / (2.0 * s2 * (q as f64 - p as f64));
            if z.last().is_some_and(|&b| s <= b) {
                v.pop();
                z.pop();
            } else {
                z.push(s);
                break;
            }
        }
        if v.is_empty() {
            z.clear();
        }
        v.push(q);
    }
    if v.is_empty() {
        return;
    }
    z.push(f64::INFINITY);
    // z[j] is the boundary between v[j] and v[j + 1]
    let mut j = 0;
    for (q, o) in out.iter_mut().enumerate() {
        while z[j] < q as f64 {
            j += 1;
        }
        let p = v[j];
        *o = s2 * (q as f64 - p as f64).powi(2) + f[p];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over every feature cell.
    fn brute(feature: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
        let at = |i: usize| [i / (dims[1] * dims[2]), (i / dims[2]) % dims[1], i % dims[2]];
        (0..feature.len())
            .map(|i| {
                let a = at(i);
                (0..feature.len())
                    .filter(|&j| feature[j])
                    .map(|j| {
                        let b = at(j);
                        (0..3).map(|x| ((a[x] as f64 - b[x] as f64) * spacing[x]).powi(2)).sum::<f64>()
                    })
                    .fold(f64::INFINITY, f64::min)
            })
            .collect()
    }

    #[test]
    fn distances_are_exact_in_2d() {
        let (w, h) = (7, 5);
        let mut f = vec![false; w * h];
        f[2 * w + 3] = true;
        f[0] = true;
        let d = squared(&f, &[h, w], &[1.0, 1.0]);
        for y in 0..h {
            for x in 0..w {
                let a = ((x as f64 - 3.0).powi(2) + (y as f64 - 2.0).powi(2)).min((x * x + y * y) as f64);
                assert_eq!(d[y * w + x], a, "({x}, {y})");
            }
        }
        assert!(squared(&[false; 4], &[2, 2], &[1.0, 1.0]).iter().all(|d| d.is_infinite()));
    }

    #[test]
    fn distances_are_exact_in_3d_with_anisotropic_spacing() {
        let dims = [5, 6, 7];
        let spacing = [8.0, 0.7, 1.3];
        // a few scattered features, from a fixed pattern
        let feature: Vec<bool> = (0..dims.iter().product::<usize>()).map(|i| (i * 37 + 11) % 53 == 0).collect();
        assert!(feature.iter().filter(|&&f| f).count() >= 3);
        let d = squared(&feature, &dims, &spacing);
        for (i, (got, want)) in d.iter().zip(brute(&feature, dims, spacing)).enumerate() {
            assert!((got - want).abs() < 1e-9, "cell {i}: {got} vs {want}");
        }
    }
}
