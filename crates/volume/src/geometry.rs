//! Slice geometry of one series (PS3.3 C.7.6.2 Image Plane module, C.7.6.2.1.1).
//!
//! - Every slice must share Rows, Columns, Pixel Spacing, Image Orientation (Patient) and Frame of
//!   Reference UID; otherwise the slices do not form one grid ([`Refusal::InconsistentGeometry`]).
//! - Only axial series are accepted: row cosines within 0.1 rad of ±x and column cosines within
//!   0.1 rad of ±y. The canonical grid then differs from the source grid by at most a flip of
//!   each in-plane axis, so pixels are copied, never resampled. This rule, the duplicate
//!   tolerance and the gap rule below are `firstread_store::candidate`'s, which study assembly
//!   applies to the index to make a study ready early.
//! - Slices are ordered by Image Position (Patient) projected on the slice normal
//!   (row x column cosines, turned to point superior), never by Instance Number, which scanners
//!   number in either direction and which reconstructions restart.
//! - Positions within 0.01 mm are duplicates: one is kept (lowest Instance Number, then SOP
//!   Instance UID), the rest dropped with a warning.
//! - The slice spacing is the median of the differences of those projections, never Slice
//!   Thickness (0018,0050), which describes the reconstruction profile and differs from the spacing
//!   for overlapping or gapped reconstructions.
//! - A difference above 1.5 x the median is a missing slice; a spread `(max - min) / median`
//!   above the contract's tolerance is non-uniform spacing; both would distort the volume.
//! - Gantry tilt is refused from Gantry/Detector Tilt (0018,1120), and from the positions: when the
//!   first-to-last position step drifts in-plane by more than tan(max tilt) x its normal
//!   component, the stack is sheared even if the attribute is absent or zero. The first-to-last
//!   step is used rather than each step so that DS rounding of single positions does not count.

use crate::contract::VolumeContract;
use crate::error::Refusal;
use crate::header::InstanceHeader;

// The axial, duplicate and gap rules are shared with study assembly's early readiness.
use firstread_store::candidate::{is_axial, median, unit_cosines, AXIS_TOLERANCE_RAD, DUPLICATE_MM, GAP_FACTOR};
/// Largest difference (mm) between Pixel Spacing values of slices of one grid.
const PIXEL_SPACING_TOLERANCE_MM: f64 = 1e-3;
/// Largest difference between direction cosines of slices of one grid.
const ORIENTATION_TOLERANCE: f64 = 1e-3;

/// The in-plane grid shared by every slice of a series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ImageGrid {
    /// Rows (0028,0010).
    pub rows: usize,
    /// Columns (0028,0011).
    pub cols: usize,
    /// Pixel Spacing (0028,0030): [between rows, between columns], mm.
    pub pixel_spacing: [f64; 2],
    /// Unit row direction (increasing column index), LPS.
    pub row_cosines: [f64; 3],
    /// Unit column direction (increasing row index), LPS.
    pub col_cosines: [f64; 3],
    /// Frame of Reference UID (0020,0052).
    pub frame_of_reference_uid: Option<String>,
}

/// How the canonical axes relate to the source grid of an axial series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AxialFrame {
    /// Source rows run posterior -> anterior (column cosine y < 0).
    pub flip_rows: bool,
    /// Source columns run left -> right (row cosine x < 0).
    pub flip_cols: bool,
    /// Unit slice normal (row x column cosines), turned so that its z is positive (superior).
    pub normal: [f64; 3],
}

/// A series whose geometry meets the contract, slices in canonical (inferior -> superior) order.
#[derive(Debug, Clone)]
pub(crate) struct SeriesPlan {
    /// Series Instance UID (0020,000E).
    pub series_instance_uid: String,
    /// One header per canonical slice.
    pub slices: Vec<InstanceHeader>,
    /// Position of each slice along `frame.normal`, mm (ascending).
    pub projections: Vec<f64>,
    /// The shared in-plane grid.
    pub grid: ImageGrid,
    /// Canonical axes vs the source grid.
    pub frame: AxialFrame,
    /// Median slice spacing from positions, mm.
    pub spacing_mm: f64,
    /// Notes for `Volume::warnings` (duplicates dropped, thickness disagreeing, ...).
    pub warnings: Vec<String>,
}

impl SeriesPlan {
    /// Extent covered along the normal: first to last position plus one spacing, mm.
    pub fn coverage_mm(&self) -> f64 {
        match (self.projections.first(), self.projections.last()) {
            (Some(first), Some(last)) => last - first + self.spacing_mm,
            _ => 0.0,
        }
    }
}

/// Checks the geometry of the images of one series and orders them.
///
/// # Errors
/// The first rule of the module doc the series breaks, as its [`Refusal`].
pub(crate) fn plan_series(
    series_instance_uid: &str,
    images: Vec<InstanceHeader>,
    contract: &VolumeContract,
) -> Result<SeriesPlan, Refusal> {
    let grid = common_grid(&images)?;
    let frame = axial_frame(&grid)?;
    check_gantry_tilt_attribute(&images, contract)?;
    let mut warnings = Vec::new();
    let (slices, projections) = drop_duplicates(sort_along_normal(images, &frame)?, &mut warnings);
    let required = contract.min_slices.max(2);
    if slices.len() < required {
        return Err(Refusal::TooFewSlices {
            series_instance_uid: series_instance_uid.to_owned(),
            found: slices.len(),
            required,
        });
    }
    check_tilt_from_positions(&slices, &frame, contract)?;
    let spacing_mm = slice_spacing(&projections, contract)?;
    // too large for the contract (the model's or the memory budget's): a candidate no more, so a
    // thinner series of the same study can still be chosen; refused from the headers, before any
    // pixel is decoded
    let voxels = grid.rows.saturating_mul(grid.cols).saturating_mul(slices.len());
    if voxels > contract.max_voxels {
        return Err(Refusal::TooLarge {
            series_instance_uid: series_instance_uid.to_owned(),
            slices: slices.len(),
            rows: grid.rows,
            cols: grid.cols,
            voxels,
            max_voxels: contract.max_voxels,
        });
    }
    warn_thickness_mismatch(&slices, spacing_mm, &mut warnings);
    Ok(SeriesPlan {
        series_instance_uid: series_instance_uid.to_owned(),
        slices,
        projections,
        grid,
        frame,
        spacing_mm,
        warnings,
    })
}

/// Rows, Columns, Pixel Spacing, Image Orientation (Patient) and Frame of Reference UID shared by
/// every image.
fn common_grid(images: &[InstanceHeader]) -> Result<ImageGrid, Refusal> {
    let first = images.first().ok_or_else(|| Refusal::InconsistentGeometry("series has no images".to_owned()))?;
    let grid = grid_of(first)?;
    for image in &images[1..] {
        let other = grid_of(image)?;
        if let Some(what) = grid_difference(&grid, &other) {
            return Err(Refusal::InconsistentGeometry(format!(
                "{what} differs between instances {} and {}",
                first.attrs.sop_instance_uid, image.attrs.sop_instance_uid
            )));
        }
    }
    Ok(grid)
}

pub(crate) fn grid_of(image: &InstanceHeader) -> Result<ImageGrid, Refusal> {
    let missing = |what: &str| {
        Refusal::InconsistentGeometry(format!("instance {} lacks a usable {what}", image.attrs.sop_instance_uid))
    };
    let rows = image.attrs.rows.filter(|&r| r > 0).ok_or_else(|| missing("Rows (0028,0010)"))?;
    let cols = image.attrs.columns.filter(|&c| c > 0).ok_or_else(|| missing("Columns (0028,0011)"))?;
    let pixel_spacing = image
        .pixel_spacing()
        .filter(|s| s.iter().all(|v| v.is_finite() && *v > 0.0))
        .ok_or_else(|| missing("Pixel Spacing (0028,0030)"))?;
    let orientation = image.orientation().ok_or_else(|| missing("Image Orientation (Patient) (0020,0037)"))?;
    let (row_cosines, col_cosines) = unit_cosines(orientation)
        .ok_or_else(|| missing("Image Orientation (Patient) (0020,0037) (two orthogonal unit vectors)"))?;
    Ok(ImageGrid {
        rows: rows as usize,
        cols: cols as usize,
        pixel_spacing,
        row_cosines,
        col_cosines,
        frame_of_reference_uid: image.attrs.frame_of_reference_uid.clone(),
    })
}

fn grid_difference(a: &ImageGrid, b: &ImageGrid) -> Option<String> {
    let close = |x: &[f64], y: &[f64], tol: f64| x.iter().zip(y).all(|(p, q)| (p - q).abs() <= tol);
    if a.rows != b.rows || a.cols != b.cols {
        Some(format!("Rows x Columns ({}x{} vs {}x{})", a.rows, a.cols, b.rows, b.cols))
    } else if !close(&a.pixel_spacing, &b.pixel_spacing, PIXEL_SPACING_TOLERANCE_MM) {
        Some(format!("Pixel Spacing ({:?} mm vs {:?} mm)", a.pixel_spacing, b.pixel_spacing))
    } else if !close(&a.row_cosines, &b.row_cosines, ORIENTATION_TOLERANCE)
        || !close(&a.col_cosines, &b.col_cosines, ORIENTATION_TOLERANCE)
    {
        Some(format!(
            "Image Orientation (Patient) ({:?}{:?} vs {:?}{:?})",
            a.row_cosines, a.col_cosines, b.row_cosines, b.col_cosines
        ))
    } else if a.frame_of_reference_uid != b.frame_of_reference_uid {
        Some("Frame of Reference UID".to_owned())
    } else {
        None
    }
}

/// The canonical frame of an axial grid, or [`Refusal::NotAxial`] naming the plane.
pub(crate) fn axial_frame(grid: &ImageGrid) -> Result<AxialFrame, Refusal> {
    let (r, c) = (grid.row_cosines, grid.col_cosines);
    if !is_axial(r, c) {
        return Err(Refusal::NotAxial { plane: plane_name(r, c), row_cosines: r, column_cosines: c });
    }
    let n = cross(r, c);
    let normal = if n[2] < 0.0 { [-n[0], -n[1], -n[2]] } else { n };
    Ok(AxialFrame { flip_rows: c[1] < 0.0, flip_cols: r[0] < 0.0, normal })
}

fn plane_name(r: [f64; 3], c: [f64; 3]) -> String {
    let near = |v: f64| v.abs() >= AXIS_TOLERANCE_RAD.cos();
    let n = cross(r, c);
    if near(r[1]) && near(c[0]) {
        return "transposed axial (rows run anterior-posterior)".to_owned();
    }
    if near(n[2]) {
        let rotation = r[1].atan2(r[0]).to_degrees();
        return format!("axial rotated in-plane by {rotation:.1} degrees");
    }
    let axis = (0..3).max_by(|&i, &j| n[i].abs().total_cmp(&n[j].abs())).unwrap_or(2);
    let off_axis = n[axis].abs().clamp(-1.0, 1.0).acos().to_degrees();
    let from_axial = n[2].abs().clamp(-1.0, 1.0).acos().to_degrees();
    match axis {
        0 if off_axis <= AXIS_TOLERANCE_RAD.to_degrees() => "sagittal".to_owned(),
        1 if off_axis <= AXIS_TOLERANCE_RAD.to_degrees() => "coronal".to_owned(),
        _ => format!("oblique ({from_axial:.1} degrees from axial)"),
    }
}

fn check_gantry_tilt_attribute(images: &[InstanceHeader], contract: &VolumeContract) -> Result<(), Refusal> {
    let worst =
        images.iter().filter_map(|i| i.gantry_tilt_deg).filter(|t| t.is_finite()).map(f64::abs).fold(0.0, f64::max);
    if worst > contract.max_gantry_tilt_deg {
        return Err(Refusal::GantryTilt { degrees: worst });
    }
    Ok(())
}

/// Images with their position along the normal, ascending; ties by Instance Number, then UID.
fn sort_along_normal(images: Vec<InstanceHeader>, frame: &AxialFrame) -> Result<Vec<(f64, InstanceHeader)>, Refusal> {
    let mut placed = Vec::with_capacity(images.len());
    for image in images {
        let position = image.position().filter(|p| p.iter().all(|v| v.is_finite())).ok_or_else(|| {
            Refusal::InconsistentGeometry(format!(
                "instance {} lacks a usable Image Position (Patient) (0020,0032)",
                image.attrs.sop_instance_uid
            ))
        })?;
        placed.push((dot(position, frame.normal), image));
    }
    placed.sort_by(|(pa, a), (pb, b)| {
        pa.total_cmp(pb)
            .then(a.instance_number_key().cmp(&b.instance_number_key()))
            .then_with(|| a.attrs.sop_instance_uid.cmp(&b.attrs.sop_instance_uid))
    });
    Ok(placed)
}

/// Keeps one image per position (lowest Instance Number, then SOP Instance UID).
fn drop_duplicates(sorted: Vec<(f64, InstanceHeader)>, warnings: &mut Vec<String>) -> (Vec<InstanceHeader>, Vec<f64>) {
    let mut clusters: Vec<Vec<(f64, InstanceHeader)>> = Vec::new();
    for (projection, image) in sorted {
        match clusters.last_mut() {
            Some(cluster) if cluster.last().is_some_and(|(p, _)| projection - p < DUPLICATE_MM) => {
                cluster.push((projection, image));
            }
            _ => clusters.push(vec![(projection, image)]),
        }
    }
    let mut slices = Vec::with_capacity(clusters.len());
    let mut projections = Vec::with_capacity(clusters.len());
    for mut cluster in clusters {
        cluster.sort_by(|(_, a), (_, b)| {
            a.instance_number_key()
                .cmp(&b.instance_number_key())
                .then_with(|| a.attrs.sop_instance_uid.cmp(&b.attrs.sop_instance_uid))
        });
        let mut members = cluster.into_iter();
        let Some((projection, kept)) = members.next() else { continue };
        for (_, dropped) in members {
            warnings.push(format!(
                "duplicate slice at z={projection:.2} mm dropped: instance {} (Instance Number {}) has the position of \
                 instance {} (Instance Number {}), which is kept",
                dropped.attrs.sop_instance_uid,
                number_text(dropped.attrs.instance_number),
                kept.attrs.sop_instance_uid,
                number_text(kept.attrs.instance_number),
            ));
        }
        projections.push(projection);
        slices.push(kept);
    }
    (slices, projections)
}

fn number_text(n: Option<i32>) -> String {
    n.map_or_else(|| "absent".to_owned(), |n| n.to_string())
}

/// Refuses when the first-to-last position step leaves the normal by more than the maximum tilt.
fn check_tilt_from_positions(
    slices: &[InstanceHeader],
    frame: &AxialFrame,
    contract: &VolumeContract,
) -> Result<(), Refusal> {
    let (Some(first), Some(last)) =
        (slices.first().and_then(|s| s.position()), slices.last().and_then(|s| s.position()))
    else {
        return Ok(());
    };
    let step = sub(last, first);
    let along = dot(step, frame.normal);
    let in_plane = norm(sub(step, scale(frame.normal, along)));
    let degrees = in_plane.atan2(along).to_degrees();
    if along > 0.0 && degrees > contract.max_gantry_tilt_deg {
        return Err(Refusal::GantryTilt { degrees });
    }
    Ok(())
}

/// The median spacing of ascending positions, after the gap, uniformity and size checks.
pub(crate) fn slice_spacing(projections: &[f64], contract: &VolumeContract) -> Result<f64, Refusal> {
    let diffs: Vec<f64> = projections.windows(2).map(|w| w[1] - w[0]).collect();
    let median = median(&diffs).ok_or_else(|| Refusal::InconsistentGeometry("fewer than two slices".to_owned()))?;
    if let Some(i) = diffs.iter().position(|&d| d > GAP_FACTOR * median) {
        return Err(Refusal::MissingSlices { gap_mm: diffs[i], median_spacing_mm: median, at_mm: projections[i] });
    }
    let min = diffs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = diffs.iter().copied().fold(0.0, f64::max);
    if (max - min) / median > contract.spacing_tolerance {
        return Err(Refusal::NonUniformSpacing {
            min_mm: min,
            max_mm: max,
            median_mm: median,
            tolerance: contract.spacing_tolerance,
        });
    }
    if median > contract.max_slice_spacing_mm {
        return Err(Refusal::SpacingTooLarge { spacing_mm: median, max_mm: contract.max_slice_spacing_mm });
    }
    Ok(median)
}

fn warn_thickness_mismatch(slices: &[InstanceHeader], spacing_mm: f64, warnings: &mut Vec<String>) {
    let thickness = slices.iter().find_map(|s| s.attrs.slice_thickness);
    if let Some(t) = thickness.filter(|t| (t - spacing_mm).abs() > 0.1 * spacing_mm) {
        warnings.push(format!(
            "Slice Thickness {t} mm differs from the {spacing_mm:.3} mm spacing of Image Position (Patient); \
             the spacing from positions is used"
        ));
    }
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub(crate) fn scale(a: [f64; 3], s: f64) -> [f64; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(o: [f64; 6]) -> ImageGrid {
        let (row_cosines, col_cosines) = unit_cosines(o).expect("unit cosines");
        ImageGrid {
            rows: 4,
            cols: 4,
            pixel_spacing: [1.0, 1.0],
            row_cosines,
            col_cosines,
            frame_of_reference_uid: None,
        }
    }

    #[test]
    fn axial_flips_and_normal() {
        let f = axial_frame(&grid([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])).expect("axial");
        assert_eq!((f.flip_rows, f.flip_cols, f.normal), (false, false, [0.0, 0.0, 1.0]));
        let f = axial_frame(&grid([1.0, 0.0, 0.0, 0.0, -1.0, 0.0])).expect("axial");
        assert_eq!((f.flip_rows, f.flip_cols), (true, false));
        assert!(f.normal[2] > 0.99);
        let f = axial_frame(&grid([-1.0, 0.0, 0.0, 0.0, -1.0, 0.0])).expect("axial");
        assert_eq!((f.flip_rows, f.flip_cols), (true, true));
        // 3 degrees of in-plane rotation is still axial.
        let a = 3f64.to_radians();
        assert!(axial_frame(&grid([a.cos(), a.sin(), 0.0, -a.sin(), a.cos(), 0.0])).is_ok());
    }

    #[test]
    fn non_axial_planes_are_named() {
        let plane = |o| match axial_frame(&grid(o)) {
            Err(Refusal::NotAxial { plane, .. }) => plane,
            other => panic!("expected NotAxial, got {other:?}"),
        };
        assert_eq!(plane([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]), "coronal");
        assert_eq!(plane([0.0, 1.0, 0.0, 0.0, 0.0, -1.0]), "sagittal");
        assert_eq!(plane([0.0, 1.0, 0.0, 1.0, 0.0, 0.0]), "transposed axial (rows run anterior-posterior)");
        let a = 30f64.to_radians();
        assert_eq!(plane([1.0, 0.0, 0.0, 0.0, a.cos(), a.sin()]), "oblique (30.0 degrees from axial)");
        assert_eq!(plane([a.cos(), a.sin(), 0.0, -a.sin(), a.cos(), 0.0]), "axial rotated in-plane by 30.0 degrees");
    }

    #[test]
    fn spacing_rules() {
        let c = VolumeContract::default();
        assert_eq!(slice_spacing(&[0.0, 2.5, 5.0, 7.5], &c), Ok(2.5));
        assert_eq!(
            slice_spacing(&[0.0, 2.5, 5.0, 10.0, 12.5], &c),
            Err(Refusal::MissingSlices { gap_mm: 5.0, median_spacing_mm: 2.5, at_mm: 5.0 })
        );
        assert!(matches!(slice_spacing(&[0.0, 2.0, 5.0, 7.0, 10.0], &c), Err(Refusal::NonUniformSpacing { .. })));
        assert!(matches!(slice_spacing(&[0.0, 12.0, 24.0], &c), Err(Refusal::SpacingTooLarge { .. })));
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));
    }
}
