//! Model packages and inference.
//!
//! A model package is a folder `models/<name>/` with a manifest ([`manifest::Manifest`]: name,
//! version, input contract, output labels with SNOMED CT / DCM codes), a TorchScript file, and
//! the script that produced it. [`runner::Model`] loads it with libtorch (tch `CModule`) and runs
//! `forward(hu [slices, rows, cols] f32, spacing [3] f32 mm) -> uint8 [channels, slices, rows, cols]`.

pub mod manifest;
pub mod runner;

pub use manifest::Takes;
pub use manifest::{
    Manifest, ManifestError, OutputLabel, Pipeline, EXTENSION_COVID19, PIPELINE_DENOISE, PIPELINE_FOLLOW_BRONCHOGRAMS,
    PIPELINE_RAMP_AIR_TISSUE, PIPELINE_REFINE, PIPELINE_TRIM_GAS, STAGE_HU_BAND,
};
pub use runner::{set_threads, DeviceChoice, InferenceError, Model, Segmentation};

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn package() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/covid19-lung-ct/0.2.4")
    }

    #[test]
    fn the_bundled_manifest_is_valid() {
        let m = Manifest::load(&package()).expect("manifest");
        assert_eq!(m.name, "covid19-lung-ct");
        assert_eq!(m.channel("left_lung"), Some(0));
        assert_eq!(m.channel("right_lung"), Some(1));
        assert_eq!(m.channel("lung_opacity"), Some(2));
        assert_eq!(m.outputs[0].type_value, "44029006");
        assert_eq!(m.pipeline.follow.as_deref(), Some(PIPELINE_FOLLOW_BRONCHOGRAMS));
        assert_eq!(m.pipeline.ramp.as_deref(), Some(PIPELINE_RAMP_AIR_TISSUE));
    }

    /// `follow` is part of the pleural-cavity step: without it, or with a name the node does not
    /// implement, the package is refused, naming why.
    #[test]
    fn a_follow_step_needs_the_pleural_cavity_and_a_known_name() {
        let copy = tempfile::tempdir().expect("dir");
        let toml = std::fs::read_to_string(package().join("manifest.toml")).expect("manifest");
        let write = |text: String| std::fs::write(copy.path().join("manifest.toml"), text).expect("write");
        let refine_line = "refine = \"pleural-cavity\"";
        assert!(toml.contains(refine_line));
        write(toml.replacen(refine_line, "", 1));
        let err = Manifest::load(copy.path()).expect_err("follow without refine");
        assert!(err.to_string().contains("without refine = \"pleural-cavity\""), "{err}");
        write(toml.replacen("follow = \"air-bronchograms\"", "follow = \"airways\"", 1));
        let err = Manifest::load(copy.path()).expect_err("unknown follow");
        assert!(err.to_string().contains("unknown follow step \"airways\""), "{err}");
        // the ramp (0.2.4) likewise
        let without_follow = toml.replacen("follow = \"air-bronchograms\"", "", 1);
        write(without_follow.replacen(refine_line, "", 1));
        let err = Manifest::load(copy.path()).expect_err("ramp without refine");
        assert!(err.to_string().contains("names ramp = \"air-tissue\" without refine"), "{err}");
        write(toml.replacen("ramp = \"air-tissue\"", "ramp = \"fat\"", 1));
        let err = Manifest::load(copy.path()).expect_err("unknown ramp");
        assert!(err.to_string().contains("unknown ramp step \"fat\""), "{err}");
        write(toml.clone());
        assert!(Manifest::load(copy.path()).is_ok());
    }

    /// An empty (all air) volume gives empty masks of the right shape, through real libtorch.
    #[test]
    fn air_gives_empty_masks() {
        let model = Model::load(&package()).expect("model loads");
        let shape = [12, 32, 32];
        let hu = vec![-1024.0f32; shape.iter().product()];
        let seg = model.segment(&hu, shape, [5.0, 1.0, 1.0]).expect("runs");
        assert_eq!(seg.channels.len(), 3);
        assert!(seg.channels.iter().all(|c| c.len() == hu.len() && c.iter().all(|&v| v == 0)));
    }

    /// A TorchScript file that is not the one the manifest names is refused at load, with its
    /// path and both hashes; the same package with its file intact loads.
    #[test]
    fn a_corrupted_torchscript_is_refused_with_both_hashes() {
        let copy = tempfile::tempdir().expect("dir");
        for name in ["manifest.toml", "model.pt"] {
            std::fs::copy(package().join(name), copy.path().join(name)).expect("copy");
        }
        let manifest = Manifest::load(copy.path()).expect("manifest");
        assert!(Model::load(copy.path()).is_ok(), "the intact copy loads");
        // one byte changed
        let path = copy.path().join("model.pt");
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let Err(err) = Model::load(copy.path()) else { panic!("a changed TorchScript loaded") };
        let text = err.to_string();
        assert!(
            matches!(&err, InferenceError::Manifest(ManifestError::Integrity { expected, found, .. })
                if *expected == manifest.torchscript_sha256 && found.len() == 64 && found != expected),
            "{text}"
        );
        assert!(text.contains(&path.display().to_string()) && text.contains(&manifest.torchscript_sha256), "{text}");
        // a manifest without a valid hash is refused before any file is read
        let toml = std::fs::read_to_string(copy.path().join("manifest.toml")).expect("manifest");
        let broken = toml.replace(&manifest.torchscript_sha256, "not-a-hash");
        std::fs::write(copy.path().join("manifest.toml"), broken).expect("write");
        let err = Manifest::load(copy.path()).expect_err("invalid");
        assert!(err.to_string().contains("torchscript_sha256 must be 64 hex digits"), "{err}");
    }

    #[test]
    fn the_device_is_chosen_and_cuda_without_cuda_is_refused_with_what_to_do() {
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!(" AUTO ".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:1".parse(), Ok(DeviceChoice::Cuda(1)));
        assert!("gpu".parse::<DeviceChoice>().is_err_and(|e| e.contains("\"cuda:N\"")));
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert_eq!(DeviceChoice::Cuda(1).to_string(), "cuda:1");
        assert_eq!(DeviceChoice::default(), DeviceChoice::Auto);
        let cpu = Model::load_on(&package(), DeviceChoice::Cpu).expect("loads on the CPU");
        assert_eq!(cpu.device(), tch::Device::Cpu);
        if cfg!(feature = "cuda") && tch::Cuda::is_available() {
            let gpu = Model::load_on(&package(), DeviceChoice::Cuda(0)).expect("loads on CUDA");
            assert_eq!(gpu.device(), tch::Device::Cuda(0));
            return;
        }
        // this machine has no GPU (or this build no CUDA): auto is the CPU, cuda is refused
        assert_eq!(Model::load_on(&package(), DeviceChoice::Auto).expect("loads").device(), tch::Device::Cpu);
        let Err(err) = Model::load_on(&package(), DeviceChoice::Cuda(0)) else { panic!("CUDA without CUDA loaded") };
        let text = err.to_string();
        let expected = if cfg!(feature = "cuda") { "sees no CUDA device" } else { "built without CUDA" };
        assert!(matches!(err, InferenceError::Device(_)) && text.contains(expected), "{text}");
        assert!(text.contains("device = \"cpu\""), "says what to do: {text}");
    }

    #[test]
    fn a_libtorch_error_is_an_error_and_the_model_stays_usable() {
        let model = Model::load(&package()).expect("model loads");
        let shape = [12, 32, 32];
        // a volume that does not fill its shape: libtorch refuses the view (it used to panic)
        let short = vec![-1024.0f32; 100];
        let err = model.segment(&short, shape, [5.0, 1.0, 1.0]).expect_err("refused");
        assert!(matches!(err, InferenceError::Torch(ref m) if m.contains("shape")), "{err}");
        // the same model runs the next volume
        let hu = vec![-1024.0f32; shape.iter().product()];
        assert_eq!(model.segment(&hu, shape, [5.0, 1.0, 1.0]).expect("runs").channels.len(), 3);
    }
}
