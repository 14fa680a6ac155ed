//! `firstread bench analysis`: time the analysis stages (volume assembly, model, measurements)
//! on the bundled sample and on a 300-slice study made from it, and write a Markdown table.
//! A benchmark, not a test: figures depend on the machine; run it on an idle one.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::open_file;
use firstread_inference::Model;

use crate::analysis::Analysis;

/// Peak resident set size of this process so far (MiB), from /proc/self/status (VmHWM).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Writes a `slices`-slice series made from `sample` (sorted by z): each new slice is linearly
/// interpolated in z between its two nearest source slices, with new Study/Series/SOP Instance
/// UIDs (2.25 UUID-derived) and Image Position (Patient) / Slice Thickness updated. Returns the files.
///
/// # Errors
/// Unreadable sample files or unwritable `out`.
pub fn resampled_series(sample: &[PathBuf], slices: usize, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut src: Vec<(f64, dicom_object::DefaultDicomObject)> = Vec::new();
    for p in sample {
        let obj = open_file(p).with_context(|| format!("reading {}", p.display()))?;
        let z = obj.element(tags::IMAGE_POSITION_PATIENT)?.to_multi_float64()?.get(2).copied().unwrap_or(0.0);
        src.push((z, obj));
    }
    src.sort_by(|a, b| a.0.total_cmp(&b.0));
    anyhow::ensure!(src.len() >= 2, "need at least two sample slices");
    let (z0, z1) = (src[0].0, src[src.len() - 1].0);
    let step = (z1 - z0) / (slices - 1) as f64;
    let new_uid = || format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
    let (study, series) = (new_uid(), new_uid());
    let pixels: Vec<Vec<u16>> = src
        .iter()
        .map(|(_, o)| -> anyhow::Result<Vec<u16>> {
            let bytes = o.element(tags::PIXEL_DATA)?.to_bytes()?;
            Ok(bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
        })
        .collect::<anyhow::Result<_>>()?;
    std::fs::create_dir_all(out)?;
    let mut files = Vec::with_capacity(slices);
    for n in 0..slices {
        let z = z0 + step * n as f64;
        let hi = src.iter().position(|(sz, _)| *sz >= z - 1e-6).unwrap_or(src.len() - 1).max(1);
        let lo = hi - 1;
        let t = ((z - src[lo].0) / (src[hi].0 - src[lo].0)).clamp(0.0, 1.0);
        let data: Vec<u8> = pixels[lo]
            .iter()
            .zip(&pixels[hi])
            .flat_map(|(&a, &b)| ((f64::from(a) * (1.0 - t) + f64::from(b) * t).round() as u16).to_le_bytes())
            .collect();
        let mut obj = src[lo].1.clone();
        let sop = new_uid();
        let position = obj.element(tags::IMAGE_POSITION_PATIENT)?.to_multi_float64()?;
        obj.put(DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(study.as_str())));
        obj.put(DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from(series.as_str())));
        obj.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop.as_str())));
        obj.put(DataElement::new(tags::INSTANCE_NUMBER, VR::IS, PrimitiveValue::from((n + 1).to_string())));
        obj.put(DataElement::new(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            PrimitiveValue::from(format!("{:.3}\\{:.3}\\{:.3}", position[0], position[1], z)),
        ));
        obj.put(DataElement::new(tags::SLICE_THICKNESS, VR::DS, PrimitiveValue::from(format!("{step:.3}"))));
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(data)));
        obj.meta_mut().media_storage_sop_instance_uid = sop.clone();
        let path = out.join(format!("{:04}.dcm", n + 1));
        obj.write_to_file(&path).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
    }
    Ok(files)
}

/// Runs the analysis benchmark and returns the Markdown report.
///
/// # Errors
/// Model or sample unavailable.
pub fn analysis(models_dir: &Path, model: &str, sample: &[PathBuf], repeats: usize) -> anyhow::Result<String> {
    let model = Mutex::new(Model::load(&models_dir.join(model))?);
    let tmp = tempfile::tempdir()?;
    let big = resampled_series(sample, 300, tmp.path())?;
    let mut out = String::new();
    let _ = writeln!(out, "| case | slices | volume s | model s | measurements s | total s | peak RSS MiB |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, files) in
        [("sample (30 x 512 x 512, 8 mm)", sample), ("300 x 512 x 512 (made from the sample, 0.78 mm)", &big[..])]
    {
        let mut runs = Vec::new();
        for _ in 0..repeats.max(1) {
            let started = Instant::now();
            let outcome = Analysis::analyse_files(&model, files).map_err(|e| anyhow::anyhow!(e))?;
            anyhow::ensure!(outcome.result["status"] == "analysed", "{name}: {}", outcome.result);
            let t = &outcome.result["timings_ms"];
            let get = |k: &str| t[k].as_f64().unwrap_or(f64::NAN) / 1000.0;
            runs.push([get("volume"), get("model"), get("measurements"), started.elapsed().as_secs_f64()]);
        }
        runs.sort_by(|a, b| a[3].total_cmp(&b[3]));
        let m = runs[runs.len() / 2];
        let _ = writeln!(
            out,
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            files.len(),
            m[0],
            m[1],
            m[2],
            m[3],
            peak_rss_mib().unwrap_or(f64::NAN)
        );
    }
    Ok(out)
}
