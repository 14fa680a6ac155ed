//! The model package manifest (`models/<name>/manifest.toml`): identity, input contract,
//! output labels with their DICOM SEG codes (PS3.3 C.8.20.2 Segment Description, CID 7150/7151).
//! The same contract fits the rule-based first model and a trained segmentation model.

use std::path::{Path, PathBuf};

use firstread_findings::measures::{ClassificationSpec, MeasurementSpec};
pub use firstread_store::candidate::Takes;
use serde::Deserialize;

/// A model package's manifest. Unknown keys are allowed (documentation for humans).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Manifest {
    /// Model name (the folder name under `models/`).
    pub name: String,
    /// Model version (goes into result UIDs and reports).
    pub version: String,
    /// "rule-based" or "trained".
    pub kind: String,
    /// What it does, for reports.
    pub description: String,
    /// TorchScript file, relative to the package folder.
    pub torchscript: String,
    /// SHA-256 of that file (64 hex digits): checked when the package is loaded, a mismatch
    /// refuses the package ([`ManifestError::Integrity`]).
    pub torchscript_sha256: String,
    /// Intended use statement, for reports.
    #[serde(default)]
    pub intended_use: Option<String>,
    /// Which studies it takes (`[takes]`: modality, body part, calling AE titles, sites); absent:
    /// every CT study.
    #[serde(default)]
    pub takes: Takes,
    /// Input contract.
    pub input: InputContract,
    /// One entry per output channel.
    pub outputs: Vec<OutputLabel>,
    /// Steps the node runs around the TorchScript (none for a package that is TorchScript only).
    #[serde(default)]
    pub pipeline: Pipeline,
    /// Findings the node computes in code of its own for this kind of model, beyond the
    /// vocabulary: [`EXTENSION_COVID19`] or none. The one extension point for what the
    /// vocabulary cannot express.
    #[serde(default)]
    pub extension: Option<String>,
    /// Measurements in the node's vocabulary (`firstread_findings::measures`).
    #[serde(default)]
    pub measurements: Vec<MeasurementSpec>,
    /// Classes by bands over those measurements.
    #[serde(default)]
    pub classifications: Vec<ClassificationSpec>,
}

/// The COVID-19 pneumonia findings (`firstread_findings::compute`: involvement, zones, CT
/// severity score, SFR extent class, RSNA pattern suggestion, effusions, focal lesions). Needs
/// outputs named `left_lung`, `right_lung` and `lung_opacity`.
pub const EXTENSION_COVID19: &str = "covid19-pneumonia";

/// Steps of a model that the node implements in Rust, around its TorchScript
/// (`crates/lungs`). Each names one implementation; an unknown name refuses the package.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Pipeline {
    /// Before the model: `"kernel-aware"` ([`PIPELINE_DENOISE`]), or none.
    #[serde(default)]
    pub denoise: Option<String>,
    /// After the model: `"pleural-cavity"` ([`PIPELINE_REFINE`]), or none. Outputs whose
    /// `stage` names it are produced by that step, not by the TorchScript.
    #[serde(default)]
    pub refine: Option<String>,
    /// After the model, before `refine`: `"gas"` ([`PIPELINE_TRIM_GAS`]: gas wrapped in tissue
    /// taken out of the lung masks), or none.
    #[serde(default)]
    pub trim: Option<String>,
    /// Within `refine`: `"air-bronchograms"` ([`PIPELINE_FOLLOW_BRONCHOGRAMS`]: a consolidation
    /// followed through its air bronchograms deeper than the cavity's walks reach), or none.
    /// Needs `refine = "pleural-cavity"`.
    #[serde(default)]
    pub follow: Option<String>,
    /// Within `refine`: `"air-tissue"` ([`PIPELINE_RAMP_AIR_TISSUE`]: along the cavity's walks,
    /// fat-band HU next to air is the ramp between air and tissue, part of the layer), or none.
    /// Needs `refine = "pleural-cavity"`.
    #[serde(default)]
    pub ramp: Option<String>,
}

/// The gas trimming step (`firstread_lungs::trim_gas`).
pub const PIPELINE_TRIM_GAS: &str = "gas";

/// The pleural-cavity step's following of a consolidation through its air bronchograms
/// (`firstread_lungs::lobar`).
pub const PIPELINE_FOLLOW_BRONCHOGRAMS: &str = "air-bronchograms";

/// The pleural-cavity step's reading of fat-band HU next to air as the layer's ramp from air to
/// tissue (`firstread_lungs::Options::air_tissue_ramp`).
pub const PIPELINE_RAMP_AIR_TISSUE: &str = "air-tissue";

/// The kernel-aware in-plane denoising step (`firstread_lungs::denoise`).
pub const PIPELINE_DENOISE: &str = "kernel-aware";
/// The pleural-cavity refinement step (`firstread_lungs::refine`).
pub const PIPELINE_REFINE: &str = "pleural-cavity";

fn default_peak_bytes_per_voxel() -> f64 {
    32.0
}

/// What the model accepts (the caller refuses other input with a reason).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct InputContract {
    /// Accepted slice spacing range (mm).
    pub slice_spacing_mm: [f64; 2],
    /// Accepted pixel spacing range (mm).
    pub pixel_spacing_mm: [f64; 2],
    /// Fewest slices.
    pub min_slices: usize,
    /// Shortest cranio-caudal extent (mm).
    pub min_z_extent_mm: f64,
    /// Most voxels.
    pub max_voxels: usize,
    /// Peak memory of one analysis per input voxel (bytes): the model, its step before and after,
    /// the measurements. With the worker's memory budget it bounds the voxels a study may have.
    #[serde(default = "default_peak_bytes_per_voxel")]
    pub peak_bytes_per_voxel: f64,
    /// HU values are clamped to this range before the model.
    pub hu_clip: [f32; 2],
    /// HU value of padding and outside-FOV voxels.
    pub padding_hu: f32,
}

/// One output channel: a segment.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct OutputLabel {
    /// Channel index in the output tensor.
    pub channel: usize,
    /// Role name: `left_lung`, `right_lung`, `lung_opacity`, ...
    pub name: String,
    /// Segment Label (0062,0005).
    pub segment_label: String,
    /// Segment Description (0062,0006).
    #[serde(default)]
    pub description: Option<String>,
    /// Segment Algorithm Type (0062,0008).
    pub algorithm_type: String,
    /// Segmented Property Category Code Sequence (0062,0003): scheme, value, meaning.
    pub category_scheme: String,
    /// See `category_scheme`.
    pub category_value: String,
    /// See `category_scheme`.
    pub category_meaning: String,
    /// Segmented Property Type Code Sequence (0062,000F).
    pub type_scheme: String,
    /// See `type_scheme`.
    pub type_value: String,
    /// See `type_scheme`.
    pub type_meaning: String,
    /// Anatomic Region Sequence (0008,2218), when the type is not itself anatomy.
    #[serde(default)]
    pub anatomic_region_scheme: Option<String>,
    /// See `anatomic_region_scheme`.
    #[serde(default)]
    pub anatomic_region_value: Option<String>,
    /// See `anatomic_region_scheme`.
    #[serde(default)]
    pub anatomic_region_meaning: Option<String>,
    /// Recommended display colour, sRGB 0-255 (converted to CIELab for Recommended Display CIELab Value).
    pub recommended_display_rgb: [u8; 3],
    /// The pipeline step that produces this channel; `None`: the TorchScript does. Channels of
    /// the TorchScript come first. [`STAGE_HU_BAND`]: the node derives it from `within` and
    /// `hu_band` after the model and its steps.
    #[serde(default)]
    pub stage: Option<String>,
    /// [`STAGE_HU_BAND`]: the outputs (listed before this one) whose voxels it selects from.
    #[serde(default)]
    pub within: Vec<String>,
    /// [`STAGE_HU_BAND`]: the voxels with `lo < HU <= hi` (HU the model saw), e.g.
    /// `[-1100, -950]` for the low attenuation area at -950 HU.
    #[serde(default)]
    pub hu_band: Option<[f64; 2]>,
}

/// An output the node derives from earlier outputs and an HU band (a generic step: any package
/// may use it).
pub const STAGE_HU_BAND: &str = "hu-band";

/// Manifest errors.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// File unreadable.
    #[error("reading {path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML for the manifest.
    #[error("parsing {path}: {message}")]
    Parse {
        /// Which file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A rule of the contract broken.
    #[error("model manifest {0}")]
    Invalid(String),
    /// The TorchScript file is not the one the manifest names (corrupted, or replaced without a
    /// new manifest).
    #[error(
        "{}: sha256 {found} does not match the manifest's torchscript_sha256 {expected}; the package is refused",
        path.display()
    )]
    Integrity {
        /// The TorchScript file.
        path: PathBuf,
        /// `torchscript_sha256` of the manifest.
        expected: String,
        /// The file's.
        found: String,
    },
}

impl Manifest {
    /// Reads and validates `<dir>/manifest.toml`.
    ///
    /// # Errors
    /// [`ManifestError`].
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join("manifest.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Io { path: path.clone(), source })?;
        let manifest: Manifest =
            toml::from_str(&text).map_err(|e| ManifestError::Parse { path: path.clone(), message: e.to_string() })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the TorchScript file in `dir` against `torchscript_sha256`.
    ///
    /// # Errors
    /// [`ManifestError::Io`] when it cannot be read, [`ManifestError::Integrity`] on a mismatch.
    pub fn verify_torchscript(&self, dir: &Path) -> Result<PathBuf, ManifestError> {
        use sha2::{Digest, Sha256};
        let path = dir.join(&self.torchscript);
        // streamed: a trained model's weights need not be held twice at start-up
        let mut hasher = Sha256::new();
        std::fs::File::open(&path)
            .and_then(|mut file| std::io::copy(&mut file, &mut hasher))
            .map_err(|source| ManifestError::Io { path: path.clone(), source })?;
        let found = format!("{:x}", hasher.finalize());
        if !found.eq_ignore_ascii_case(self.torchscript_sha256.trim()) {
            return Err(ManifestError::Integrity { path, expected: self.torchscript_sha256.clone(), found });
        }
        Ok(path)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        let sha = self.torchscript_sha256.trim();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ManifestError::Invalid(format!(
                "torchscript_sha256 must be 64 hex digits (the SHA-256 of {}), found {sha:?}",
                self.torchscript
            )));
        }
        self.takes.check().map_err(ManifestError::Invalid)?;
        for (i, o) in self.outputs.iter().enumerate() {
            if o.channel != i {
                return Err(ManifestError::Invalid(format!(
                    "outputs must list channels 0..n in order (found {} at {i})",
                    o.channel
                )));
            }
        }
        match self.pipeline.denoise.as_deref() {
            None | Some(PIPELINE_DENOISE) => {}
            Some(other) => return Err(ManifestError::Invalid(format!("names an unknown denoise step {other:?}"))),
        }
        match self.pipeline.trim.as_deref() {
            None => {}
            Some(PIPELINE_TRIM_GAS) => {
                for role in ["left_lung", "right_lung"] {
                    if self.channel(role).is_none() {
                        return Err(ManifestError::Invalid(format!("lacks an output named {role} (trim needs it)")));
                    }
                }
            }
            Some(other) => return Err(ManifestError::Invalid(format!("names an unknown trim step {other:?}"))),
        }
        match self.pipeline.refine.as_deref() {
            None | Some(PIPELINE_REFINE) => {}
            Some(other) => return Err(ManifestError::Invalid(format!("names an unknown refine step {other:?}"))),
        }
        // the parts of the pleural-cavity step a package may name
        for (key, value, known) in [
            ("follow", self.pipeline.follow.as_deref(), PIPELINE_FOLLOW_BRONCHOGRAMS),
            ("ramp", self.pipeline.ramp.as_deref(), PIPELINE_RAMP_AIR_TISSUE),
        ] {
            match value {
                None => {}
                Some(v) if v != known => {
                    return Err(ManifestError::Invalid(format!("names an unknown {key} step {v:?}")));
                }
                Some(_) if self.pipeline.refine.as_deref() != Some(PIPELINE_REFINE) => {
                    return Err(ManifestError::Invalid(format!(
                        "names {key} = {known:?} without refine = {PIPELINE_REFINE:?} (it is part of that step)"
                    )));
                }
                Some(_) => {}
            }
        }
        let model_channels = self.torchscript_channels();
        for o in &self.outputs {
            match o.stage.as_deref() {
                None if o.channel >= model_channels => {
                    return Err(ManifestError::Invalid(format!(
                        "lists TorchScript output {} after a pipeline output",
                        o.name
                    )))
                }
                Some(STAGE_HU_BAND) => {
                    let earlier = |name: &String| self.outputs[..o.channel].iter().any(|e| &e.name == name);
                    if o.within.is_empty() || !o.within.iter().all(earlier) {
                        return Err(ManifestError::Invalid(format!(
                            "output {} ({STAGE_HU_BAND}) needs `within`: outputs listed before it",
                            o.name
                        )));
                    }
                    if !o.hu_band.is_some_and(|[lo, hi]| lo.is_finite() && hi.is_finite() && lo < hi) {
                        return Err(ManifestError::Invalid(format!(
                            "output {} ({STAGE_HU_BAND}) needs hu_band = [lo, hi], lo < hi",
                            o.name
                        )));
                    }
                }
                Some(stage) if Some(stage) != self.pipeline.refine.as_deref() => {
                    return Err(ManifestError::Invalid(format!(
                        "output {} comes from step {stage:?}, which the pipeline does not run",
                        o.name
                    )))
                }
                _ => {}
            }
        }
        match self.extension.as_deref() {
            None => {}
            Some(EXTENSION_COVID19) => {
                for role in ["left_lung", "right_lung", "lung_opacity"] {
                    if self.channel(role).is_none() {
                        return Err(ManifestError::Invalid(format!(
                            "lacks an output named {role} (extension {EXTENSION_COVID19} needs it)"
                        )));
                    }
                }
            }
            Some(other) => return Err(ManifestError::Invalid(format!("names an unknown extension {other:?}"))),
        }
        if self.pipeline.refine.is_some() {
            for role in ["left_lung", "right_lung", "lung_opacity"] {
                if self.channel(role).is_none() {
                    return Err(ManifestError::Invalid(format!(
                        "lacks an output named {role} (the refine step needs it)"
                    )));
                }
            }
        }
        let names: Vec<&str> = self.outputs.iter().map(|o| o.name.as_str()).collect();
        firstread_findings::measures::validate(&self.measurements, &self.classifications, &names)
            .map_err(ManifestError::Invalid)?;
        if self.input.slice_spacing_mm[0] > self.input.slice_spacing_mm[1] || self.input.min_slices == 0 {
            return Err(ManifestError::Invalid("has an empty input range".into()));
        }
        Ok(())
    }

    /// How many channels the TorchScript returns (outputs without a `stage`).
    pub fn torchscript_channels(&self) -> usize {
        self.outputs.iter().filter(|o| o.stage.is_none()).count()
    }

    /// The channel of the output named `role`.
    pub fn channel(&self, role: &str) -> Option<usize> {
        self.outputs.iter().find(|o| o.name == role).map(|o| o.channel)
    }
}
