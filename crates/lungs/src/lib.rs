//! The lung model's steps that run in Rust, around its TorchScript (`models/covid19-lung-ct`,
//! from version 0.2.0; the manifest's `[pipeline]` names them):
//!
//! - [`denoise()`] (before the model): measures the image noise in homogeneous soft tissue and,
//!   when it is above [`denoise::TARGET_NOISE_HU`] (sharp reconstruction kernels such as
//!   Siemens B70f), smooths each slice in-plane with the narrowest Gaussian that brings it
//!   there. Soft kernels are passed through unchanged. The model and the measurements see the
//!   same denoised HU, so lung and opacity volumes do not depend on the kernel.
//! - [`refine()`] ([`cavity`], after the model): the model's lung masks are made of aerated lung and what it
//!   encloses, so consolidated lung along the chest wall, which has the density of the chest
//!   wall, falls outside them. This step finds the inner surface of the rib cage around each
//!   lung, slice by slice, and takes the dense tissue between the aerated lung and the ribs on
//!   the dependent (posterior) side as the content of the pleural cavity. Each such region is
//!   then called consolidation (lung and opacity), pleural effusion (neither) or indeterminate
//!   (counted as opacity, and said). A mass the refined lung encloses again is followed into
//!   the slices where it reaches the hilum or the wall ([`follow`]). Its last part ([`bays`])
//!   takes dense lesions that leave a bay in the lung's outline (a mass against the mediastinum
//!   or the wall) into the lung, and the caps of dense lesions into the opacity. With
//!   [`refine_with`] and [`Options::follow_bronchograms`] (model 0.2.3), each consolidation is
//!   followed through its air bronchograms deeper than the walks reach ([`lobar`]); with
//!   [`Options::air_tissue_ramp`] (model 0.2.4), the walks keep fat-band HU next to air in the
//!   layer (the ramp from an air bronchogram or ground glass to consolidation).
//!
//! - [`trim_gas()`] ([`gas`], after the model): in-plane parts of a lung mask that are gas wrapped
//!   in tissue (the stomach's bubble under the left dome, bowel) are taken out of it.
//! - [`position::caution`]: the refinement assumes a supine patient; a prone or decubitus scan's
//!   result says that its dependent side was not looked at.
//! - [`fov::caution`]: a field of view that cuts through the lungs makes every volume wrong; such a
//!   result says so.
//!
//! Volumes are `[slices, rows, cols]` row-major in the canonical orientation of the model
//! contract: axis 0 inferior -> superior, axis 1 anterior -> posterior, axis 2 patient right ->
//! left. Spacing is `[slice, row, col]` in mm. HU are Hounsfield units.

pub mod bays;
pub mod cavity;
pub mod denoise;
mod distance;
pub mod follow;
pub mod fov;
pub mod gas;
pub mod lobar;
pub mod position;

pub use cavity::{refine, refine_with, DenseKind, DenseRegion, Options, Refined};
pub use denoise::{denoise, Denoised};
pub use gas::{trim_gas, GasTrimmed};
