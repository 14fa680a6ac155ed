//! The geometric contract a series must meet before it becomes a model input.
//!
//! The numbers are what the lung model can use without resampling artefacts: enough slices to
//! hold both lungs, slices no thicker than 10 mm, evenly spaced, stacked perpendicular to the
//! image plane (no gantry tilt), with a fixed value for voxels outside the reconstructed field.

/// Limits applied to the chosen series (PS3.3 C.7.6.2 Image Plane module geometry).
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeContract {
    /// Fewest slices (after duplicates are dropped) a volume may have; values below 2 act as 2,
    /// since a slice spacing needs two positions. Default 16.
    pub min_slices: usize,
    /// Largest accepted slice spacing in mm, measured from Image Position (Patient) (0020,0032)
    /// along the slice normal, never from Slice Thickness (0018,0050). Default 10.0 mm.
    pub max_slice_spacing_mm: f64,
    /// Largest accepted spread of the slice spacings, `(max - min) / median`, as a fraction.
    /// Default 0.1 (10 %).
    pub spacing_tolerance: f64,
    /// Largest accepted gantry tilt in degrees, from Gantry/Detector Tilt (0018,1120) and from the
    /// slice positions. Default 0.5°.
    pub max_gantry_tilt_deg: f64,
    /// HU written for Pixel Padding Value (0028,0120) voxels (PS3.3 C.7.5.1.1.2). Default -1024.
    pub padding_hu: f32,
    /// Most voxels (`slices x rows x cols`) a volume may have: a larger series is no candidate
    /// (another series of the study may be chosen; alone, it is refused), judged from its
    /// headers before any pixel is decoded or memory is taken for it. Default 2^31, the most a
    /// volume can hold.
    pub max_voxels: usize,
    /// Which series the model takes beyond the geometry: a series whose Body Part Examined
    /// (0018,0015) it does not take is no candidate (`firstread_store::candidate::Takes`).
    /// Default: any.
    pub takes: firstread_store::candidate::Takes,
}

impl Default for VolumeContract {
    fn default() -> Self {
        Self {
            min_slices: 16,
            max_slice_spacing_mm: 10.0,
            spacing_tolerance: 0.1,
            max_gantry_tilt_deg: 0.5,
            padding_hu: -1024.0,
            max_voxels: crate::volume::MAX_VOXELS,
            takes: firstread_store::candidate::Takes::default(),
        }
    }
}
