//! The bundled real chest CT (TCIA Lung-PET-CT-Dx, subject A0002; see data/ct/README.md) in every
//! transfer syntax the node accepts.

mod common;

use std::path::{Path, PathBuf};

use dicom_core::value::{PixelFragmentSequence, Value};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::OpenFileOptions;
use firstread_volume::{build_study_volume, StudyVolume, Volume, VolumeContract};

/// Reference values computed independently with pydicom (stored x slope + intercept).
const HU_SUM: i64 = -4_212_661_004;
const PIXEL_SPACING: f64 = 0.646484375;

fn sample_dir(variant: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/ct").join(format!("lung-dx-a0002-b40f{variant}"))
}

/// The `1-*.dcm` files of a sample folder, sorted by name.
fn sample_files(variant: &str) -> Vec<PathBuf> {
    let dir = sample_dir(variant);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("1-") && n.ends_with(".dcm")))
        .collect();
    files.sort();
    assert_eq!(files.len(), 30, "{}", dir.display());
    files
}

fn build(files: &[PathBuf]) -> StudyVolume {
    build_study_volume(files, &VolumeContract::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn at(v: &Volume, k: usize, r: usize, c: usize) -> f32 {
    v.hu[v.index(k, r, c)]
}

fn assert_same_hu(reference: &Volume, other: &Volume, what: &str) {
    assert_eq!(reference.shape, other.shape, "{what}");
    let differing = reference.hu.iter().zip(&other.hu).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differing, 0, "{what}: {differing} voxels differ");
    let uids = |v: &Volume| v.slices.iter().map(|s| s.sop_instance_uid.clone()).collect::<Vec<_>>();
    assert_eq!(uids(reference), uids(other), "{what}");
}

#[test]
fn sample_builds_the_canonical_volume() {
    let study = build(&sample_files(""));
    let v = &study.volume;
    assert_eq!(v.shape, [30, 512, 512]);
    assert_eq!(v.spacing_mm, [8.0, PIXEL_SPACING, PIXEL_SPACING]);
    assert_eq!(v.origin_mm, [-173.1767578125, -294.1767578125, 80.0]);
    assert_eq!(v.axes, [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]);
    assert!(!v.flip_rows && !v.flip_cols);
    let z: Vec<f64> = v.slices.iter().map(|s| s.position_mm[2]).collect();
    assert_eq!(z, (0..30).map(|k| 80.0 + 8.0 * k as f64).collect::<Vec<_>>());
    // The files are numbered superior first: Instance Number 30 is the lowest slice.
    assert_eq!(v.slices[0].instance_number, Some(30));
    assert_eq!(v.slices[29].instance_number, Some(1));
    assert_eq!(v.slices[0].sop_instance_uid, "1.3.6.1.4.1.14519.5.2.1.6655.2359.314450283460420385239439544304");
    assert_eq!(v.slices[0].sop_class_uid, uids::CT_IMAGE_STORAGE);
    assert_eq!(v.to_patient(29.0, 511.0, 511.0)[2], 312.0);
    assert!((v.voxel_volume_ml() - 8.0 * PIXEL_SPACING * PIXEL_SPACING / 1000.0).abs() < 1e-15);
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);

    // Air in front of the chest: the top 30 rows of every slice.
    let mut air = 0.0f64;
    for k in 0..30 {
        for r in 0..30 {
            air += (0..512).map(|c| f64::from(at(v, k, r, c))).sum::<f64>();
        }
    }
    let air = air / (30.0 * 30.0 * 512.0);
    assert!((-1010.0..=-990.0).contains(&air), "air {air}");
    assert_eq!(at(v, 15, 10, 256), -997.0);
    // Mediastinal soft tissue at z = 200 mm, centre of the image.
    let block: Vec<f32> =
        (253..=259).flat_map(|r| (253..=259).map(move |c| (r, c))).map(|(r, c)| at(v, 15, r, c)).collect();
    let mean = block.iter().map(|&h| f64::from(h)).sum::<f64>() / block.len() as f64;
    assert!((0.0..=60.0).contains(&mean), "soft tissue {mean}");
    assert_eq!(at(v, 15, 256, 256), 31.0);
    assert_eq!(at(v, 0, 256, 256), 39.0);
    assert_eq!(at(v, 29, 256, 256), -216.0);
    assert_eq!(v.hu.iter().map(|&h| h as i64).sum::<i64>(), HU_SUM);

    assert_eq!(study.decisions.len(), 1);
    let d = &study.decisions[0];
    assert!(d.chosen);
    assert_eq!(d.reason, "chosen: 30 slices at 8.00 mm spacing covering 240.0 mm, kernel B40f (soft)");
    assert_eq!((d.slices, d.slice_thickness_mm, d.convolution_kernel.as_deref()), (30, Some(8.0), Some("B40f")));
    assert_eq!(d.series_description.as_deref(), Some("ThoraxRoutine  8.0.0  B40f"));
}

#[test]
fn compressed_variants_decode_to_the_same_hu() {
    let reference = build(&sample_files("")).volume;
    for variant in ["-jpegll", "-jpegls", "-j2k"] {
        let other = build(&sample_files(variant)).volume;
        assert_same_hu(&reference, &other, variant);
    }
}

#[test]
fn file_order_does_not_matter() {
    let reference = build(&sample_files("")).volume;
    let mut files = sample_files("");
    // A fixed permutation: stride 7 over 30 files (7 and 30 are coprime).
    let shuffled: Vec<PathBuf> = (0..30).map(|i| files[(i * 7 + 3) % 30].clone()).collect();
    assert_same_hu(&reference, &build(&shuffled).volume, "shuffled");
    files.reverse();
    assert_same_hu(&reference, &build(&files).volume, "reversed");
}

/// Re-writes the native sample as Deflated Explicit VR LE and Implicit VR LE.
#[test]
fn deflated_and_implicit_vr_variants_decode_to_the_same_hu() {
    let reference = build(&sample_files("")).volume;
    for transfer_syntax in [uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, uids::IMPLICIT_VR_LITTLE_ENDIAN] {
        let dir = tempfile::tempdir().expect("temp dir");
        let files: Vec<PathBuf> = sample_files("")
            .iter()
            .map(|path| {
                let obj = OpenFileOptions::new().open_file(path).expect("open").into_inner();
                common::write_object(obj, dir.path(), &file_name(path), transfer_syntax)
            })
            .collect();
        assert_same_hu(&reference, &build(&files).volume, transfer_syntax);
    }
}

/// Encapsulated pixel data with an empty Basic Offset Table, the frame split over several
/// fragments and a zero-length fragment among them.
#[test]
fn fragmented_encapsulated_pixel_data_decodes_to_the_same_hu() {
    let reference = build(&sample_files("")).volume;
    for variant in ["-jpegll", "-j2k", "-jpegls"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let files: Vec<PathBuf> = sample_files(variant).iter().map(|p| refragment(p, dir.path())).collect();
        assert_same_hu(&reference, &build(&files).volume, variant);
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().and_then(|n| n.to_str()).expect("file name").to_owned()
}

fn refragment(path: &Path, dir: &Path) -> PathBuf {
    let mut obj = OpenFileOptions::new().open_file(path).expect("open");
    let fragments = obj.element(tags::PIXEL_DATA).expect("pixel data").fragments().expect("encapsulated").to_vec();
    let whole: Vec<u8> = fragments.concat();
    // Fragments have even lengths (PS3.5 A.4): split at even offsets.
    let (a, rest) = whole.split_at((whole.len() / 3) & !1);
    let (b, c) = rest.split_at((rest.len() / 2) & !1);
    let pieces = vec![a.to_vec(), Vec::new(), b.to_vec(), c.to_vec()];
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        Value::PixelSequence(PixelFragmentSequence::new(Vec::<u32>::new(), pieces)),
    ));
    let out = dir.join(file_name(path));
    obj.write_to_file(&out).expect("write");
    out
}

/// Slices decoded while the study arrives ([`firstread_volume::SliceCache`]) give the same volume
/// bit for bit, in every transfer syntax; the volume takes them out of the cache; a cache too
/// small for the study keeps the newest slices and the volume decodes the rest from the files.
#[test]
fn slices_decoded_ahead_give_the_same_volume() {
    use firstread_volume::{build_study_volume_with, SliceCache};
    let contract = VolumeContract::default();
    for variant in ["", "-jpegll", "-jpegls", "-j2k"] {
        let files = sample_files(variant);
        let direct = build_study_volume(&files, &contract).expect("volume").volume;
        let cache = SliceCache::new(64 << 20, contract.padding_hu);
        for f in &files {
            cache.prefetch(f).expect("prefetch");
        }
        assert_eq!(cache.usage().slices, 30, "{variant}");
        assert_eq!(cache.usage().bytes, 30 * 512 * 512 * 4, "{variant}");
        let ahead = build_study_volume_with(&files, &contract, Some(&cache)).expect("volume").volume;
        assert!(direct.hu.iter().zip(&ahead.hu).all(|(a, b)| a.to_bits() == b.to_bits()), "{variant}");
        assert_eq!(
            (direct.shape, direct.spacing_mm, &direct.warnings),
            (ahead.shape, ahead.spacing_mm, &ahead.warnings)
        );
        assert_eq!(cache.usage().slices, 0, "{variant}: the volume took its slices");
        assert_eq!(cache.usage().bytes, 0);
    }
    // room for 10 slices of 1 MiB: the 10 newest are kept
    let files = sample_files("");
    let cache = SliceCache::new(10 * 512 * 512 * 4, contract.padding_hu);
    for f in &files {
        cache.prefetch(f).expect("prefetch");
    }
    assert_eq!(cache.usage().slices, 10);
    let direct = build_study_volume(&files, &contract).expect("volume").volume;
    let mixed = build_study_volume_with(&files, &contract, Some(&cache)).expect("volume").volume;
    assert!(direct.hu.iter().zip(&mixed.hu).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!(cache.usage().slices, 0);
    // a volume with another padding HU decodes every slice itself, and leaves them cached
    let cache = SliceCache::new(64 << 20, -2000.0);
    for f in &files {
        cache.prefetch(f).expect("prefetch");
    }
    let other = build_study_volume_with(&files, &contract, Some(&cache)).expect("volume").volume;
    assert!(direct.hu.iter().zip(&other.hu).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!(cache.usage().slices, 30);
    // a file written again at the same path after it was decoded ahead is read again: here its
    // Rescale Intercept moves its HU by 24
    let dir = tempfile::tempdir().expect("temp dir");
    let copies: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            let to = dir.path().join(f.file_name().expect("name"));
            std::fs::copy(f, &to).expect("copy");
            to
        })
        .collect();
    let cache = SliceCache::new(64 << 20, contract.padding_hu);
    for f in &copies {
        cache.prefetch(f).expect("prefetch");
    }
    let mut obj = OpenFileOptions::new().open_file(&copies[5]).expect("open");
    obj.put(DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, "-1000"));
    obj.write_to_file(&copies[5]).expect("write");
    let rewritten = build_study_volume(&copies, &contract).expect("volume").volume;
    assert!(direct.hu.iter().zip(&rewritten.hu).any(|(a, b)| a != b), "the rewritten slice differs");
    let ahead = build_study_volume_with(&copies, &contract, Some(&cache)).expect("volume").volume;
    assert!(rewritten.hu.iter().zip(&ahead.hu).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!(cache.usage().slices, 0);
}
