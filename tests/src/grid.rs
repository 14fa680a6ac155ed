//! Voxel-grid helpers shared by the synthetic-data builders (`phantom`, `inserted`): row-major
//! `[slices, rows, cols]` indices and their face neighbours.

/// The in-plane 4-neighbours of pixel `j` of a `rows x cols` slice.
pub fn neighbours4(j: usize, rows: usize, cols: usize) -> impl Iterator<Item = usize> {
    let (r, c) = (j / cols, j % cols);
    [(c > 0).then(|| j - 1), (c + 1 < cols).then(|| j + 1), (r > 0).then(|| j - cols), (r + 1 < rows).then(|| j + cols)]
        .into_iter()
        .flatten()
}

/// The 6 face neighbours of voxel `i` of a `[slices, rows, cols]` volume.
pub fn neighbours6(i: usize, [slices, rows, cols]: [usize; 3]) -> impl Iterator<Item = usize> {
    let plane = rows * cols;
    let k = i / plane;
    neighbours4(i % plane, rows, cols)
        .map(move |j| k * plane + j)
        .chain([(k > 0).then(|| i - plane), (k + 1 < slices).then(|| i + plane)].into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corners_and_centres() {
        assert_eq!(neighbours4(0, 3, 3).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(neighbours4(4, 3, 3).count(), 4);
        let mut n: Vec<usize> = neighbours6(13, [3, 3, 3]).collect();
        n.sort_unstable();
        assert_eq!(n, vec![4, 10, 12, 14, 16, 22]);
        assert_eq!(neighbours6(0, [3, 3, 3]).count(), 3);
    }
}
