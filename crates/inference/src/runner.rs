//! Running a TorchScript segmentation model with libtorch (tch `CModule`), on CPU, or on CUDA when
//! built with the `cuda` feature and a GPU is present ([`DeviceChoice`], `[worker] device`). No
//! Python at run time.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tch::{CModule, Device, Kind, Tensor};

use crate::manifest::{Manifest, ManifestError};

/// A loaded model package.
#[derive(Debug)]
pub struct Model {
    /// Its manifest.
    pub manifest: Manifest,
    /// The package folder.
    pub dir: PathBuf,
    module: CModule,
    device: Device,
}

/// Binary masks produced by a model: one per output channel, each `[slices, rows, cols]`
/// row-major, 0 or 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segmentation {
    /// Masks by channel.
    pub channels: Vec<Vec<u8>>,
    /// `[slices, rows, cols]`.
    pub shape: [usize; 3],
}

/// Inference errors.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// libtorch failed to load or run the module.
    #[error("libtorch: {0}")]
    Torch(String),
    /// The model's output does not match its contract.
    #[error("model output {0}")]
    Contract(String),
    /// The device asked for is not there (a CUDA device without CUDA).
    #[error("{0}")]
    Device(String),
}

/// Where the TorchScript runs (`[worker] device`): `"cpu"`, `"auto"` (the default) or `"cuda"` /
/// `"cuda:N"`. The node's own steps (volume, denoising, pleural cavity, measurements) run on the
/// CPU whatever the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    /// The CPU, even where a GPU is present.
    Cpu,
    /// CUDA device 0 when this build has CUDA (the `cuda` feature) and a device is visible, else
    /// the CPU.
    #[default]
    Auto,
    /// CUDA device N; a node whose build has no CUDA, or that sees no such device, refuses to
    /// start and says why.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "auto" => Ok(DeviceChoice::Auto),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("device {s:?}: one of \"cpu\", \"auto\", \"cuda\", \"cuda:N\"")),
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

impl DeviceChoice {
    /// The device this choice resolves to, in words: "CPU", "CUDA device 0".
    ///
    /// # Errors
    /// As [`DeviceChoice::resolve`].
    pub fn resolved_name(self) -> Result<String, InferenceError> {
        Ok(match self.resolve()? {
            Device::Cuda(n) => format!("CUDA device {n}"),
            _ => "CPU".to_owned(),
        })
    }

    /// The libtorch device for this choice on this build and machine.
    ///
    /// # Errors
    /// [`InferenceError::Device`] for CUDA asked for on a build without CUDA, on a machine
    /// where libtorch sees no CUDA device, or beyond the devices it sees.
    pub fn resolve(self) -> Result<Device, InferenceError> {
        let built_with_cuda = cfg!(feature = "cuda");
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto if built_with_cuda => Ok(Device::cuda_if_available()),
            DeviceChoice::Auto => Ok(Device::Cpu),
            DeviceChoice::Cuda(_) if !built_with_cuda => Err(InferenceError::Device(format!(
                "device = \"{self}\": this firstread was built without CUDA; build it with `cargo build --release \
                 --features cuda` against a CUDA libtorch (docs/libtorch.md, \"GPU\"), or set device = \"cpu\""
            ))),
            DeviceChoice::Cuda(n) => {
                let count = if tch::Cuda::is_available() { tch::Cuda::device_count() } else { 0 };
                if (n as i64) < count {
                    Ok(Device::Cuda(n))
                } else if count == 0 {
                    Err(InferenceError::Device(format!(
                        "device = \"{self}\": libtorch sees no CUDA device (is the NVIDIA driver loaded, nvidia-smi \
                         working, CUDA_VISIBLE_DEVICES unset or right?); set device = \"cpu\" or \"auto\" to run on \
                         the CPU"
                    )))
                } else {
                    Err(InferenceError::Device(format!(
                        "device = \"{self}\": libtorch sees {count} CUDA device(s), numbered from 0"
                    )))
                }
            }
        }
    }
}

impl From<tch::TchError> for InferenceError {
    fn from(e: tch::TchError) -> Self {
        InferenceError::Torch(e.to_string())
    }
}

impl Model {
    /// Loads `models/<name>/` (manifest + TorchScript) on the best available device
    /// ([`DeviceChoice::Auto`]).
    ///
    /// # Errors
    /// As [`Model::load_on`].
    pub fn load(dir: &Path) -> Result<Self, InferenceError> {
        Self::load_on(dir, DeviceChoice::Auto)
    }

    /// Loads `models/<name>/` (manifest + TorchScript) on the device `choice` names.
    ///
    /// # Errors
    /// The device asked for is not there ([`InferenceError::Device`]), manifest errors, a
    /// TorchScript file whose SHA-256 is not the manifest's (`ManifestError::Integrity`, with the
    /// path and both hashes), or one libtorch cannot load.
    pub fn load_on(dir: &Path, choice: DeviceChoice) -> Result<Self, InferenceError> {
        let device = choice.resolve()?;
        let manifest = Manifest::load(dir)?;
        let path = manifest.verify_torchscript(dir)?;
        let mut module = CModule::load_on_device(&path, device)
            .map_err(|e| InferenceError::Torch(format!("loading {}: {e}", path.display())))?;
        module.set_eval();
        Ok(Model { manifest, dir: dir.to_path_buf(), module, device })
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Runs the TorchScript on an HU volume `[slices, rows, cols]` (canonical orientation, see the
    /// manifest) with voxel spacing `[slice, row, col]` in mm. HU are clamped to the contract's
    /// `hu_clip` first.
    ///
    /// # Errors
    /// libtorch failures, or an output that is not uint8 `[channels, slices, rows, cols]`.
    pub fn segment(&self, hu: &[f32], shape: [usize; 3], spacing_mm: [f64; 3]) -> Result<Segmentation, InferenceError> {
        let _guard = tch::no_grad_guard();
        // The profiling graph executor re-optimises for every new input shape (thread-local
        // setting, so set on the calling thread): the first job of each shape paid seconds.
        tch::jit::set_graph_executor_optimize(false);
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let [lo, hi] = self.manifest.input.hu_clip;
        // every libtorch call is the fallible one (`f_`): an out-of-memory or shape error is this
        // job's error, never a panic
        // one copy into libtorch, then the clamp in place (on libtorch's threads)
        let mut input = Tensor::f_from_slice(hu)?.f_view(dims.as_slice())?;
        let _ = input.f_clamp_(f64::from(lo), f64::from(hi))?;
        let input = input.f_to_device(self.device)?;
        let spacing = Tensor::f_from_slice(&spacing_mm.map(|v| v as f32))?.f_to_device(self.device)?;
        let out = self.module.forward_ts(&[input, spacing])?;
        let channels = self.manifest.torchscript_channels();
        let expected: Vec<i64> = std::iter::once(channels as i64).chain(dims.iter().copied()).collect();
        if out.size() != expected {
            return Err(InferenceError::Contract(format!("shape {:?}, expected {expected:?}", out.size())));
        }
        let out = out.f_to_device(Device::Cpu)?.f_to_kind(Kind::Uint8)?.f_contiguous()?;
        // one copy per channel straight from the output (no copy of the whole output first:
        // fresh memory is what costs), made 0/1 in place
        let channels = (0..channels as i64)
            .map(|c| {
                let mut mask = Vec::<u8>::try_from(out.f_get(c)?.f_view([-1])?)?;
                mask.iter_mut().for_each(|v| *v = u8::from(*v != 0));
                Ok(mask)
            })
            .collect::<Result<Vec<Vec<u8>>, InferenceError>>()?;
        Ok(Segmentation { channels, shape })
    }
}

/// Sets libtorch's intra-op thread count (0: leave libtorch's default).
pub fn set_threads(threads: usize) {
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
}
