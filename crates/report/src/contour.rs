//! Outlines of a binary mask on one slice, for the planar ROIs of the Structured Report
//! (PS3.3 C.18.6 Spatial Coordinates: a closed POLYLINE repeats its first point at the end).
//!
//! [`outline_largest_component`] labels the 8-connected components of the mask, keeps the largest,
//! traces its outer boundary with Moore-neighbour tracing ([`trace_outer_boundary`]; holes are
//! not traced) and simplifies the polygon with Douglas-Peucker ([`simplify_closed`]) until it has
//! at most the requested number of vertices. Coordinates are `(row, column)` of pixel centres
//! (`r + 0.5`, `c + 0.5`), i.e. the PS3.3 C.18.6.1.1 image coordinate convention where the top
//! left corner of the top left pixel is (0, 0): every vertex lies strictly inside the image.

use std::collections::VecDeque;

/// One 8-connected component of a slice mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// Its pixels, `rows * cols` row-major, 1 inside.
    pub mask: Vec<u8>,
    /// Number of pixels.
    pub pixels: usize,
}

/// The outline of the largest component of a slice mask.
#[derive(Debug, Clone, PartialEq)]
pub struct Outline {
    /// Closed polygon of `(row, column)` pixel-centre coordinates; the last point repeats the
    /// first (at least 4 points: 3 distinct vertices and the closing one).
    pub points: Vec<(f64, f64)>,
    /// Pixel count of the component outlined.
    pub component_pixels: usize,
    /// Number of components on the slice.
    pub components: usize,
}

/// Offsets `(drow, dcol)` of the 8 neighbours, clockwise on screen (rows grow downwards),
/// starting west.
const RING: [(isize, isize); 8] = [(0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1)];

/// The 8-connected components of `mask` (`rows * cols`, non-zero inside) in raster order of
/// their first pixel.
pub fn components(mask: &[u8], rows: usize, cols: usize) -> Vec<Component> {
    let mut label = vec![0u32; rows * cols];
    let mut out = Vec::new();
    if mask.len() != rows * cols {
        return out;
    }
    let mut queue = VecDeque::new();
    for start in 0..rows * cols {
        if mask[start] == 0 || label[start] != 0 {
            continue;
        }
        let id = out.len() as u32 + 1;
        let mut comp = vec![0u8; rows * cols];
        let mut pixels = 0usize;
        label[start] = id;
        queue.push_back(start);
        while let Some(i) = queue.pop_front() {
            comp[i] = 1;
            pixels += 1;
            let (r, c) = (i / cols, i % cols);
            for (dr, dc) in RING {
                if let Some(j) = neighbour(r, c, dr, dc, rows, cols) {
                    if mask[j] != 0 && label[j] == 0 {
                        label[j] = id;
                        queue.push_back(j);
                    }
                }
            }
        }
        out.push(Component { mask: comp, pixels });
    }
    out
}

fn neighbour(r: usize, c: usize, dr: isize, dc: isize, rows: usize, cols: usize) -> Option<usize> {
    let nr = r.checked_add_signed(dr).filter(|&v| v < rows)?;
    let nc = c.checked_add_signed(dc).filter(|&v| v < cols)?;
    Some(nr * cols + nc)
}

/// Moore-neighbour tracing of the outer boundary of the 8-connected region that contains the
/// first foreground pixel of `mask` in raster order. Returns its boundary pixels `(row, col)` in
/// order (clockwise on screen), each once per visit, without repeating the first; a single
/// pixel gives one point, an empty mask none. The trace stops when the move from the first pixel
/// to the second repeats (from then on the trace would repeat itself exactly).
pub fn trace_outer_boundary(mask: &[u8], rows: usize, cols: usize) -> Vec<(usize, usize)> {
    let inside = |r: usize, c: usize, d: usize| -> Option<(usize, usize)> {
        let (dr, dc) = RING[d];
        neighbour(r, c, dr, dc, rows, cols).filter(|&j| mask[j] != 0).map(|j| (j / cols, j % cols))
    };
    if mask.len() != rows * cols {
        return Vec::new();
    }
    let Some(first) = mask.iter().position(|&v| v != 0) else { return Vec::new() };
    let start = (first / cols, first % cols);
    let mut out = vec![start];
    // Entered from the west: everything before `start` in raster order is background.
    let (mut p, mut back) = (start, 0usize);
    let mut second = None;
    let limit = 4 * mask.iter().filter(|&&v| v != 0).count() + 8;
    for _ in 0..limit {
        let mut next = None;
        for i in 1..=8 {
            let d = (back + i) % 8;
            if let Some(q) = inside(p.0, p.1, d) {
                // the previous ring position (background) becomes the backtrack, seen from q
                let prev = RING[(back + i - 1) % 8];
                let rel = (p.0 as isize + prev.0 - q.0 as isize, p.1 as isize + prev.1 - q.1 as isize);
                let nb = RING.iter().position(|&o| o == rel).unwrap_or(0);
                next = Some((q, nb));
                break;
            }
        }
        let Some((q, nb)) = next else { break }; // isolated pixel
        match second {
            None => second = Some(q),
            Some(s) if p == start && q == s => break,
            Some(_) => {}
        }
        out.push(q);
        p = q;
        back = nb;
    }
    if out.len() > 1 && out.last() == Some(&start) {
        out.pop();
    }
    out
}

/// Douglas-Peucker simplification of a closed polygon (`points` without the closing repeat),
/// with a tolerance that starts at `0.5` and grows by half until at most `max_vertices`
/// (at least 3) remain. Returns the vertices without the closing repeat.
pub fn simplify_closed(points: &[(f64, f64)], max_vertices: usize) -> Vec<(f64, f64)> {
    let max_vertices = max_vertices.max(3);
    if points.len() <= 3 {
        return points.to_vec();
    }
    // split at the vertex farthest from the first so both halves are open chains
    let far = (1..points.len())
        .max_by(|&a, &b| dist2(points[0], points[a]).total_cmp(&dist2(points[0], points[b])))
        .unwrap_or(points.len() / 2);
    let mut epsilon = 0.5;
    loop {
        let mut keep = vec![false; points.len()];
        keep[0] = true;
        keep[far] = true;
        dp(points, 0, far, epsilon, &mut keep);
        let mut tail: Vec<(f64, f64)> = points[far..].to_vec();
        tail.push(points[0]);
        let mut keep_tail = vec![false; tail.len()];
        dp(&tail, 0, tail.len() - 1, epsilon, &mut keep_tail);
        for (i, k) in keep_tail.iter().enumerate().take(tail.len() - 1) {
            if *k {
                keep[far + i] = true;
            }
        }
        let out: Vec<(f64, f64)> = points.iter().zip(&keep).filter(|(_, &k)| k).map(|(&p, _)| p).collect();
        if out.len() <= max_vertices || epsilon > 1e6 {
            return out;
        }
        epsilon *= 1.5;
    }
}

fn dist2(a: (f64, f64), b: (f64, f64)) -> f64 {
    (a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)
}

/// Marks the vertices of `points[a..=b]` that Douglas-Peucker keeps (iterative, no recursion).
fn dp(points: &[(f64, f64)], a: usize, b: usize, epsilon: f64, keep: &mut [bool]) {
    let mut stack = vec![(a, b)];
    while let Some((a, b)) = stack.pop() {
        if b <= a + 1 {
            continue;
        }
        let (pa, pb) = (points[a], points[b]);
        let len = dist2(pa, pb).sqrt();
        let mut best = (0.0, a);
        for (i, &p) in points.iter().enumerate().take(b).skip(a + 1) {
            let d = if len > 0.0 {
                ((pb.0 - pa.0) * (pa.1 - p.1) - (pa.0 - p.0) * (pb.1 - pa.1)).abs() / len
            } else {
                dist2(pa, p).sqrt()
            };
            if d > best.0 {
                best = (d, i);
            }
        }
        if best.0 > epsilon {
            keep[best.1] = true;
            stack.push((a, best.1));
            stack.push((best.1, b));
        }
    }
}

/// Shoelace area of a polygon (closed or not; a repeated closing point adds nothing), in the
/// squared units of its coordinates.
pub fn polygon_area(points: &[(f64, f64)]) -> f64 {
    let n = points.len();
    if n < 3 {
        return 0.0;
    }
    let twice: f64 = (0..n)
        .map(|i| {
            let (a, b) = (points[i], points[(i + 1) % n]);
            a.0 * b.1 - b.0 * a.1
        })
        .sum();
    twice.abs() / 2.0
}

/// The outline of the largest 8-connected component of `mask` (`rows * cols`, non-zero inside;
/// ties go to the first in raster order), simplified to at most `max_points` points including
/// the closing repeat. A component whose traced boundary has fewer than 3 distinct vertices
/// (1 or 2 pixels, a line) is outlined by the pixel edges of its bounding box instead. `None`
/// when the mask is empty or does not have `rows * cols` values.
pub fn outline_largest_component(mask: &[u8], rows: usize, cols: usize, max_points: usize) -> Option<Outline> {
    let comps = components(mask, rows, cols);
    let count = comps.len();
    let mut best: Option<Component> = None;
    for c in comps {
        if best.as_ref().is_none_or(|b| c.pixels > b.pixels) {
            best = Some(c);
        }
    }
    let best = best?;
    let boundary = trace_outer_boundary(&best.mask, rows, cols);
    let centres: Vec<(f64, f64)> = boundary.iter().map(|&(r, c)| (r as f64 + 0.5, c as f64 + 0.5)).collect();
    let mut vertices = simplify_closed(&centres, max_points.saturating_sub(1));
    if vertices.len() < 3 || polygon_area(&vertices) == 0.0 {
        vertices = bounding_box(&boundary);
    }
    let mut points = vertices;
    points.push(points[0]);
    Some(Outline { points, component_pixels: best.pixels, components: count })
}

/// Pixel-edge corners of the bounding box of `pixels` (clockwise on screen).
fn bounding_box(pixels: &[(usize, usize)]) -> Vec<(f64, f64)> {
    let r0 = pixels.iter().map(|p| p.0).min().unwrap_or(0) as f64;
    let r1 = pixels.iter().map(|p| p.0).max().unwrap_or(0) as f64 + 1.0;
    let c0 = pixels.iter().map(|p| p.1).min().unwrap_or(0) as f64;
    let c1 = pixels.iter().map(|p| p.1).max().unwrap_or(0) as f64 + 1.0;
    vec![(r0, c0), (r0, c1), (r1, c1), (r1, c0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disc(rows: usize, cols: usize, cr: f64, cc: f64, rad: f64) -> Vec<u8> {
        let mut m = vec![0u8; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                if (r as f64 - cr).powi(2) + (c as f64 - cc).powi(2) <= rad * rad {
                    m[r * cols + c] = 1;
                }
            }
        }
        m
    }

    #[test]
    fn square_boundary_and_area() {
        let (rows, cols) = (10, 12);
        let mut m = vec![0u8; rows * cols];
        for r in 2..6 {
            for c in 3..8 {
                m[r * cols + c] = 1;
            }
        }
        let b = trace_outer_boundary(&m, rows, cols);
        // 4 x 5 block: perimeter pixels 2 * (4 + 5) - 4
        assert_eq!(b.len(), 14);
        assert_eq!(b[0], (2, 3));
        assert_eq!(b[1], (2, 4)); // clockwise on screen: along the top row first
        let o = outline_largest_component(&m, rows, cols, 200).expect("outline");
        assert_eq!(o.points.first(), o.points.last());
        assert_eq!(o.points.len(), 5); // 4 corners + closing
        assert_eq!(polygon_area(&o.points), 3.0 * 4.0); // centres: (4-1) x (5-1)
        assert_eq!(o.component_pixels, 20);
    }

    #[test]
    fn tiny_components_get_their_pixel_box() {
        let (rows, cols) = (5, 5);
        let mut m = vec![0u8; 25];
        m[2 * 5 + 2] = 1;
        let o = outline_largest_component(&m, rows, cols, 200).expect("outline");
        assert_eq!(polygon_area(&o.points), 1.0);
        m[2 * 5 + 3] = 1;
        let o = outline_largest_component(&m, rows, cols, 200).expect("outline");
        assert_eq!(polygon_area(&o.points), 2.0);
        assert!(outline_largest_component(&[0u8; 25], 5, 5, 200).is_none());
    }

    #[test]
    fn largest_of_several_and_holes_ignored() {
        let (rows, cols) = (60, 60);
        let mut m = disc(rows, cols, 20.0, 20.0, 12.0);
        let small = disc(rows, cols, 48.0, 48.0, 4.0);
        for i in 0..m.len() {
            m[i] |= small[i];
        }
        // a hole in the big one
        for r in 18..22 {
            for c in 18..22 {
                m[r * cols + c] = 0;
            }
        }
        let comps = components(&m, rows, cols);
        assert_eq!(comps.len(), 2);
        let o = outline_largest_component(&m, rows, cols, 200).expect("outline");
        assert_eq!(o.components, 2);
        let area = polygon_area(&o.points);
        // disc of radius 12: ~452 px; the centre polygon loses about half a pixel all round
        assert!((area - std::f64::consts::PI * 12.0 * 12.0).abs() < 0.1 * 452.0, "{area}");
        assert!(o.points.iter().all(|&(r, c)| r > 7.0 && r < 33.0 && c > 7.0 && c < 33.0));
    }

    #[test]
    fn simplification_respects_the_limit() {
        let (rows, cols) = (400, 400);
        let m = disc(rows, cols, 200.0, 200.0, 180.0);
        let o = outline_largest_component(&m, rows, cols, 50).expect("outline");
        assert!(o.points.len() <= 50, "{}", o.points.len());
        let area = polygon_area(&o.points);
        let truth = std::f64::consts::PI * 180.0 * 180.0;
        assert!((area - truth).abs() < 0.02 * truth, "{area} vs {truth}");
    }

    #[test]
    fn concave_and_diagonal_shapes_close() {
        // an L shape joined diagonally to a second block
        let (rows, cols) = (20, 20);
        let mut m = vec![0u8; rows * cols];
        for r in 2..10 {
            m[r * cols + 2] = 1;
            m[r * cols + 3] = 1;
        }
        for c in 2..9 {
            m[9 * cols + c] = 1;
        }
        for r in 10..14 {
            for c in 9..13 {
                m[r * cols + c] = 1;
            }
        }
        let b = trace_outer_boundary(&m, rows, cols);
        let all: usize = m.iter().map(|&v| v as usize).sum();
        assert!(b.len() <= all + 10 && b.len() > 10);
        let set: std::collections::HashSet<_> = b.iter().collect();
        // every pixel with a background 4-neighbour is on the outer boundary here (no holes)
        for r in 0..rows {
            for c in 0..cols {
                if m[r * cols + c] == 0 {
                    continue;
                }
                let edge = [(0isize, 1isize), (0, -1), (1, 0), (-1, 0)]
                    .iter()
                    .any(|&(dr, dc)| neighbour(r, c, dr, dc, rows, cols).is_none_or(|j| m[j] == 0));
                if edge {
                    assert!(set.contains(&(r, c)), "({r}, {c}) missing");
                }
            }
        }
    }
}
