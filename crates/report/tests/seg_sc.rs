//! SEG and key-image Secondary Captures built from the real sample CT
//! (`data/ct/lung-dx-a0002-b40f`, a mass in the right lung) with the real model package: each file
//! passes dciodvfy (dicom3tools) without errors, re-reads with dicom-object, references only source
//! instances, carries exactly the model's mask voxels in the source pixel grid, and is
//! byte-identical when built twice.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use dicom_dictionary_std::tags;
use dicom_object::{open_file, InMemDicomObject, OpenFileOptions};
use firstread_findings::{Findings, Grid, Masks, Side};
use firstread_inference::{Manifest, Model, Segmentation};
use firstread_report::sc::{build_key_images, choose_key_slices, SC_SOP_CLASS_UID};
use firstread_report::seg::{build_seg, srgb_to_dicom_lab, SEG_SOP_CLASS_UID};
use firstread_report::{ResultInput, ResultUids, SourceStudy};
use firstread_volume::{build_study_volume, Volume, VolumeContract};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Everything a result set is built from, computed once for all tests.
struct Fixture {
    volume: Volume,
    segmentation: Segmentation,
    findings: Findings,
    manifest: Manifest,
    source: SourceStudy,
    uids: ResultUids,
}

fn findings_of(volume: &Volume, seg: &Segmentation, manifest: &Manifest) -> Findings {
    let ch = |role: &str| &seg.channels[manifest.channel(role).expect("role")][..];
    firstread_findings::compute(
        &Grid { hu: &volume.hu, shape: volume.shape, spacing_mm: volume.spacing_mm },
        &Masks::lungs(ch("left_lung"), ch("right_lung"), ch("lung_opacity")),
    )
    .expect("findings")
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = repo_root().join("data/ct/lung-dx-a0002-b40f");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("sample folder")
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("1-") && n.ends_with(".dcm"))
            })
            .collect();
        files.sort();
        assert_eq!(files.len(), 30, "the sample has 30 slices");
        firstread_inference::set_threads(2);
        let model = Model::load(&repo_root().join("models/covid19-lung-ct/0.2.2")).expect("model package loads");
        let m = &model.manifest;
        let contract = VolumeContract {
            min_slices: m.input.min_slices,
            max_slice_spacing_mm: m.input.slice_spacing_mm[1],
            padding_hu: m.input.padding_hu,
            ..VolumeContract::default()
        };
        let volume = build_study_volume(&files, &contract).expect("sample volume").volume;
        let segmentation = model.segment(&volume.hu, volume.shape, volume.spacing_mm).expect("model runs");
        let findings = findings_of(&volume, &segmentation, m);
        let source = SourceStudy::read(&files[0]).expect("source study");
        let uids = ResultUids::derive(&source.study_instance_uid, &m.name, &m.version, 1);
        Fixture { volume, segmentation, findings, manifest: model.manifest.clone(), source, uids }
    })
}

static NO_MEASURES: firstread_findings::measures::Measures =
    firstread_findings::measures::Measures { measurements: Vec::new(), classifications: Vec::new() };

fn input<'a>(f: &'a Fixture, segmentation: &'a Segmentation, findings: &'a Findings) -> ResultInput<'a> {
    ResultInput {
        volume: &f.volume,
        segmentation,
        findings: Some(findings),
        measures: &NO_MEASURES,
        manifest: &f.manifest,
        source: &f.source,
        uids: &f.uids,
        study_version: 1,
        predecessor_sr: None,
        content_date: "20240102".into(),
        content_time: "030405".into(),
    }
}

/// Runs dciodvfy on `path`, prints its output, and fails on any line starting with "Error".
/// Also copies the file into `$FIRSTREAD_TEST_OUT` when set (to look at the objects).
fn dciodvfy(path: &Path) {
    if let (Ok(dir), Some(name)) = (std::env::var("FIRSTREAD_TEST_OUT"), path.file_name()) {
        let tag =
            path.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        std::fs::copy(path, Path::new(&dir).join(format!("{tag}-{}", name.to_string_lossy())))
            .expect("copy to FIRSTREAD_TEST_OUT");
    }
    let out = Command::new("/usr/bin/dciodvfy")
        .arg(path)
        .output()
        .expect("dciodvfy (dicom3tools, installed by scripts/bootstrap.sh) runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("dciodvfy {}:\n{text}", path.display());
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("Error")).collect();
    assert!(errors.is_empty(), "dciodvfy errors in {}:\n{}", path.display(), errors.join("\n"));
}

fn items(obj: &InMemDicomObject, tag: dicom_core::Tag) -> &[InMemDicomObject] {
    obj.element(tag).ok().and_then(|e| e.items()).unwrap_or_else(|| panic!("sequence {tag}"))
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag).expect("element").to_str().expect("text").trim_end_matches(['\0', ' ']).to_owned()
}

fn source_rows_cols(f: &Fixture) -> (u16, u16) {
    let obj = OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(&f.volume.slices[0].path).expect("source");
    let get = |t| obj.element(t).expect("rows/cols").to_int::<u16>().expect("US");
    (get(tags::ROWS), get(tags::COLUMNS))
}

#[test]
fn seg_passes_dciodvfy_and_carries_every_mask_voxel() {
    let f = fixture();
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("seg.dcm");
    build_seg(&input(f, &f.segmentation, &f.findings)).expect("SEG builds").write_to_file(&path).expect("SEG written");
    dciodvfy(&path);

    let obj = open_file(&path).expect("SEG re-reads");
    assert_eq!(obj.meta().transfer_syntax().trim_end_matches('\0'), "1.2.840.10008.1.2.1");
    assert_eq!(text(&obj, tags::SOP_CLASS_UID), SEG_SOP_CLASS_UID);
    assert_eq!(text(&obj, tags::MODALITY), "SEG");
    assert_eq!(text(&obj, tags::SERIES_INSTANCE_UID), f.uids.seg_series);
    assert_eq!(text(&obj, tags::SOP_INSTANCE_UID), f.uids.seg_instance);
    assert_eq!(text(&obj, tags::STUDY_INSTANCE_UID), f.source.study_instance_uid);
    assert_eq!(
        text(&obj, tags::SERIES_DESCRIPTION),
        format!("firstread lung segmentation (covid19-lung-ct {})", f.manifest.version)
    );
    let (rows, cols) = source_rows_cols(f);
    assert_eq!(obj.element(tags::ROWS).expect("rows").to_int::<u16>().expect("US"), rows);
    assert_eq!(obj.element(tags::COLUMNS).expect("cols").to_int::<u16>().expect("US"), cols);

    assert_eq!(Some(text(&obj, tags::FRAME_OF_REFERENCE_UID)), f.volume.frame_of_reference_uid);
    // Shared groups: the source images' orientation and spacing.
    let source =
        OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(&f.volume.slices[0].path).expect("source");
    let floats = |o: &InMemDicomObject, t| o.element(t).expect("DS").to_multi_float64().expect("DS");
    let shared = &items(&obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)[0];
    let iop = floats(&items(shared, tags::PLANE_ORIENTATION_SEQUENCE)[0], tags::IMAGE_ORIENTATION_PATIENT);
    for (a, b) in iop.iter().zip(floats(&source, tags::IMAGE_ORIENTATION_PATIENT)) {
        assert!((a - b).abs() < 1e-6, "orientation {iop:?}");
    }
    let spacing = floats(&items(shared, tags::PIXEL_MEASURES_SEQUENCE)[0], tags::PIXEL_SPACING);
    assert_eq!(spacing, floats(&source, tags::PIXEL_SPACING));

    // Segments: one per output, with the manifest's codes and colour.
    let segments = items(&obj, tags::SEGMENT_SEQUENCE);
    assert_eq!(segments.len(), 3);
    for (item, out) in segments.iter().zip(&f.manifest.outputs) {
        assert_eq!(text(item, tags::SEGMENT_LABEL), out.segment_label);
        let category = &items(item, tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE)[0];
        assert_eq!(text(category, tags::CODE_VALUE), out.category_value);
        assert_eq!(text(category, tags::CODING_SCHEME_DESIGNATOR), out.category_scheme);
        let ty = &items(item, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE)[0];
        assert_eq!(text(ty, tags::CODE_VALUE), out.type_value);
        assert_eq!(text(ty, tags::CODE_MEANING), out.type_meaning);
        if let Some(region) = &out.anatomic_region_value {
            assert_eq!(&text(&items(item, tags::ANATOMIC_REGION_SEQUENCE)[0], tags::CODE_VALUE), region);
        }
        let lab: Vec<u16> =
            item.element(tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE).expect("CIELab").to_multi_int().expect("US");
        assert_eq!(lab, srgb_to_dicom_lab(out.recommended_display_rgb));
    }

    // Frames: references, dimension indices, bits.
    let source_uids: HashSet<&str> = f.volume.slices.iter().map(|s| s.sop_instance_uid.as_str()).collect();
    let frames = items(&obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let n_frames: usize = text(&obj, tags::NUMBER_OF_FRAMES).parse().expect("IS");
    assert_eq!(frames.len(), n_frames);
    let referenced: Vec<String> =
        items(&items(&obj, tags::REFERENCED_SERIES_SEQUENCE)[0], tags::REFERENCED_INSTANCE_SEQUENCE)
            .iter()
            .map(|i| text(i, tags::REFERENCED_SOP_INSTANCE_UID))
            .collect();
    assert_eq!(referenced.len(), f.volume.slices.len(), "every source instance listed");
    assert!(referenced.iter().all(|u| source_uids.contains(u.as_str())));
    let pixels = obj.element(tags::PIXEL_DATA).expect("pixel data").to_bytes().expect("bytes").into_owned();
    let plane = usize::from(rows) * usize::from(cols);
    assert_eq!(pixels.len() % 2, 0);
    assert_eq!(pixels.len(), (n_frames * plane).div_ceil(8).next_multiple_of(2));
    let bit = |i: usize| (pixels[i / 8] >> (i % 8)) & 1;
    let mut set_bits: BTreeMap<u32, usize> = BTreeMap::new();
    for (fi, frame) in frames.iter().enumerate() {
        let derivation = &items(frame, tags::DERIVATION_IMAGE_SEQUENCE)[0];
        let src = &items(derivation, tags::SOURCE_IMAGE_SEQUENCE)[0];
        let uid = text(src, tags::REFERENCED_SOP_INSTANCE_UID);
        assert!(source_uids.contains(uid.as_str()), "frame {fi} references a source instance");
        let index: Vec<u32> = items(frame, tags::FRAME_CONTENT_SEQUENCE)[0]
            .element(tags::DIMENSION_INDEX_VALUES)
            .expect("div")
            .to_multi_int()
            .expect("UL");
        let k = index[1] as usize - 1;
        assert_eq!(uid, f.volume.slices[k].sop_instance_uid);
        let seg_no: u32 = items(frame, tags::SEGMENT_IDENTIFICATION_SEQUENCE)[0]
            .element(tags::REFERENCED_SEGMENT_NUMBER)
            .expect("segment")
            .to_int()
            .expect("US");
        assert_eq!(seg_no, index[0]);
        let ipp: Vec<f64> = items(frame, tags::PLANE_POSITION_SEQUENCE)[0]
            .element(tags::IMAGE_POSITION_PATIENT)
            .expect("ipp")
            .to_multi_float64()
            .expect("DS");
        for (a, b) in ipp.iter().zip(f.volume.slices[k].position_mm) {
            assert!((a - b).abs() < 1e-6, "frame {fi} position");
        }
        // Every bit of the frame equals the canonical mask voxel mapped to that source pixel.
        let mask = &f.segmentation.channels[seg_no as usize - 1];
        for r in 0..usize::from(rows) {
            for c in 0..usize::from(cols) {
                let (sr, sc) = f.volume.source_pixel(r, c);
                let want = mask[f.volume.index(k, r, c)];
                assert_eq!(bit(fi * plane + sr * usize::from(cols) + sc), want, "frame {fi} pixel ({r}, {c})");
            }
        }
        *set_bits.entry(seg_no).or_default() += (0..plane).map(|p| usize::from(bit(fi * plane + p))).sum::<usize>();
    }
    for (ch, mask) in f.segmentation.channels.iter().enumerate() {
        let voxels = mask.iter().filter(|&&m| m != 0).count();
        assert!(voxels > 0, "channel {ch} is empty on the sample");
        assert_eq!(set_bits.get(&(ch as u32 + 1)).copied().unwrap_or(0), voxels, "segment {} bits", ch + 1);
    }
    // Bits past the last frame are padding zeros.
    assert!((n_frames * plane..pixels.len() * 8).all(|i| bit(i) == 0));
}

#[test]
fn key_images_pass_dciodvfy_and_show_the_right_lung_mass() {
    let f = fixture();
    let tmp = tempfile::tempdir().expect("temp dir");
    let images = build_key_images(&input(f, &f.segmentation, &f.findings)).expect("SCs build");
    assert!(!images.is_empty() && images.len() <= 6, "{} key images", images.len());
    let keys = choose_key_slices(&input(f, &f.segmentation, &f.findings)).expect("key slices");
    assert_eq!(keys.len(), images.len());
    let right_key = f.findings.key_slices.iter().find(|k| k.side == Side::Right).expect("right lung opacity").slice;
    let (rows, cols) = source_rows_cols(f);
    let mut found_right = false;
    for (n, image) in images.iter().enumerate() {
        let path = tmp.path().join(format!("sc-{n}.dcm"));
        image.write_to_file(&path).expect("SC written");
        dciodvfy(&path);
        let obj = open_file(&path).expect("SC re-reads");
        assert_eq!(text(&obj, tags::SOP_CLASS_UID), SC_SOP_CLASS_UID);
        assert_eq!(text(&obj, tags::SOP_INSTANCE_UID), f.uids.sc_instance(n));
        assert_eq!(text(&obj, tags::SERIES_INSTANCE_UID), f.uids.sc_series);
        assert_eq!(text(&obj, tags::SERIES_DESCRIPTION), "firstread key images");
        assert_eq!(text(&obj, tags::CONVERSION_TYPE), "WSD");
        assert_eq!(text(&obj, tags::BURNED_IN_ANNOTATION), "YES");
        assert_eq!(text(&obj, tags::PHOTOMETRIC_INTERPRETATION), "RGB");
        let us = |t| obj.element(t).expect("US").to_int::<u16>().expect("US");
        assert_eq!((us(tags::ROWS), us(tags::COLUMNS)), (rows, cols));
        assert_eq!(us(tags::SAMPLES_PER_PIXEL), 3);
        assert_eq!(us(tags::PLANAR_CONFIGURATION), 0);
        assert_eq!(us(tags::BITS_ALLOCATED), 8);
        let pixels = obj.element(tags::PIXEL_DATA).expect("pixel data").to_bytes().expect("bytes").into_owned();
        assert_eq!(pixels.len(), usize::from(rows) * usize::from(cols) * 3);
        let k = keys[n].slice;
        let src = &items(&obj, tags::SOURCE_IMAGE_SEQUENCE)[0];
        assert_eq!(text(src, tags::REFERENCED_SOP_INSTANCE_UID), f.volume.slices[k].sop_instance_uid);
        if k == right_key {
            found_right = true;
            let opacity = &f.segmentation.channels[f.manifest.channel("lung_opacity").expect("opacity")];
            let plane = f.volume.shape[1] * f.volume.shape[2];
            let on_slice = opacity[k * plane..(k + 1) * plane].iter().filter(|&&m| m != 0).count();
            let redish = pixels
                .chunks_exact(3)
                .filter(|p| i32::from(p[0]) >= i32::from(p[1]) + 50 && i32::from(p[0]) >= i32::from(p[2]) + 50)
                .count();
            println!("slice {k}: {on_slice} opacity voxels, {redish} red-ish pixels");
            assert!(on_slice > 0 && redish * 2 >= on_slice, "{redish} red-ish pixels for {on_slice} opacity voxels");
            // The overlay lies where the opacity is, in the source orientation. Take an opacity
            // voxel at least 3 pixels inside the opacity, so the 2-pixel lung contour drawn on top
            // of the overlay cannot cover it.
            let w = usize::from(cols);
            let inside = |i: usize| {
                let (r, c) = ((i / w) as i64, (i % w) as i64);
                (-3i64..=3).all(|dr| {
                    (-3i64..=3).all(|dc| {
                        let (rr, cc) = (r + dr, c + dc);
                        rr >= 0
                            && cc >= 0
                            && (cc as usize) < w
                            && ((rr as usize) * w + cc as usize) < plane
                            && opacity[k * plane + (rr as usize) * w + cc as usize] != 0
                    })
                })
            };
            let (r, c) = (0..plane)
                .find(|&i| opacity[k * plane + i] != 0 && inside(i))
                .map(|i| (i / w, i % w))
                .expect("an opacity voxel 3 pixels inside the opacity");
            let (sr, sc) = f.volume.source_pixel(r, c);
            let p = &pixels[(sr * usize::from(cols) + sc) * 3..][..3];
            assert!(p[0] > p[1] && p[0] > p[2], "overlay at source ({sr}, {sc}): {p:?}");
        }
    }
    assert!(found_right, "a key image shows the slice of largest right-lung opacity ({right_key})");
}

#[test]
fn same_input_gives_byte_identical_files() {
    let f = fixture();
    let tmp = tempfile::tempdir().expect("temp dir");
    let bytes = |name: &str, obj: &dicom_object::FileDicomObject<InMemDicomObject>| {
        let path = tmp.path().join(name);
        obj.write_to_file(&path).expect("written");
        std::fs::read(&path).expect("read back")
    };
    let inp = input(f, &f.segmentation, &f.findings);
    assert_eq!(bytes("a.dcm", &build_seg(&inp).expect("SEG")), bytes("b.dcm", &build_seg(&inp).expect("SEG")));
    let a = build_key_images(&inp).expect("SC");
    let b = build_key_images(&inp).expect("SC");
    assert_eq!(a.len(), b.len());
    for (n, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(bytes(&format!("a{n}.dcm"), x), bytes(&format!("b{n}.dcm"), y), "key image {n}");
    }
}

#[test]
fn without_opacity_one_key_image_of_the_middle_slice_and_a_valid_seg() {
    let f = fixture();
    let mut seg = f.segmentation.clone();
    let ch = f.manifest.channel("lung_opacity").expect("opacity");
    seg.channels[ch].iter_mut().for_each(|v| *v = 0);
    let findings = findings_of(&f.volume, &seg, &f.manifest);
    let inp = input(f, &seg, &findings);
    let keys = choose_key_slices(&inp).expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].slice, f.volume.shape[0] / 2);
    assert!(keys[0].zones.is_empty());
    let tmp = tempfile::tempdir().expect("temp dir");
    let images = build_key_images(&inp).expect("SC");
    assert_eq!(images.len(), 1);
    let sc_path = tmp.path().join("sc.dcm");
    images[0].write_to_file(&sc_path).expect("SC written");
    dciodvfy(&sc_path);
    // The empty segment keeps one (empty) frame so every segment is referenced.
    let seg_path = tmp.path().join("seg.dcm");
    build_seg(&inp).expect("SEG").write_to_file(&seg_path).expect("SEG written");
    dciodvfy(&seg_path);
    let obj = open_file(&seg_path).expect("SEG re-reads");
    let opacity_frames = items(&obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .iter()
        .filter(|fr| {
            items(fr, tags::SEGMENT_IDENTIFICATION_SEQUENCE)[0]
                .element(tags::REFERENCED_SEGMENT_NUMBER)
                .ok()
                .and_then(|e| e.to_int::<u32>().ok())
                == Some(ch as u32 + 1)
        })
        .count();
    assert_eq!(opacity_frames, 1);
}
