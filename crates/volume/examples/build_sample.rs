//! Builds the bundled sample CT (data/ct/lung-dx-a0002-b40f, or the folder given as the first
//! argument) and prints the volume's geometry and the build time.
//!
//! `cargo run --release -p firstread-volume --example build_sample [-- <folder>]`

use std::path::PathBuf;
use std::time::Instant;

use firstread_volume::{build_study_volume, VolumeContract};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let default = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/ct/lung-dx-a0002-b40f");
    let dir = std::env::args().nth(1).map_or(default, PathBuf::from);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("1-") && n.ends_with(".dcm")))
        .collect();
    files.sort();
    let mut best = f64::INFINITY;
    for run in 0..5 {
        let start = Instant::now();
        let study = build_study_volume(&files, &VolumeContract::default())?;
        let seconds = start.elapsed().as_secs_f64();
        best = best.min(seconds);
        if run == 0 {
            let v = &study.volume;
            println!("shape {:?} spacing {:?} origin {:?}", v.shape, v.spacing_mm, v.origin_mm);
            println!("axes {:?} flips {} {}", v.axes, v.flip_rows, v.flip_cols);
            println!("warnings {:?}", v.warnings);
            for d in &study.decisions {
                println!("decision {}: {}", d.series_instance_uid, d.reason);
            }
        }
        println!("run {run}: {:.1} ms", seconds * 1000.0);
    }
    println!("best of 5: {:.1} ms for {} files", best * 1000.0, files.len());
    Ok(())
}
