//! The two Structured Reports of the real sample CT (TCIA Lung-PET-CT-Dx A0002, mass in the right
//! lung): volume -> TorchScript model -> findings -> SR; dciodvfy (no errors), dsrdump (the tree),
//! values read back equal the findings, deterministic bytes, references and geometry, and the
//! shape OHIF 3.13 needs (no browser here: the shape is checked instead).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject, OpenFileOptions};
use firstread_findings::{compute, Findings, Grid, Masks, Side};
use firstread_inference::{Manifest, Model, Segmentation};
use firstread_report::contour::{components, polygon_area};
use firstread_report::sr::{self, build_sr, build_volumetric_sr, LOCAL_SCHEME, PLANAR_TRACKING_IDENTIFIER};
use firstread_report::{ResultInput, ResultUids, SourceStudy};
use firstread_volume::{build_study_volume, Volume, VolumeContract};

struct Sample {
    volume: Volume,
    segmentation: Segmentation,
    findings: Findings,
    manifest: Manifest,
    source: SourceStudy,
    uids: ResultUids,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sample() -> &'static Sample {
    static SAMPLE: OnceLock<Sample> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let dir = repo().join("data/ct/lung-dx-a0002-b40f");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("sample folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("1-") && n.ends_with(".dcm"))
            })
            .collect();
        files.sort();
        assert_eq!(files.len(), 30);
        let model = Model::load(&repo().join("models/covid19-lung-ct/0.2.2")).expect("model package loads");
        let m = &model.manifest;
        let contract = VolumeContract {
            min_slices: m.input.min_slices,
            max_slice_spacing_mm: m.input.slice_spacing_mm[1],
            padding_hu: m.input.padding_hu,
            ..VolumeContract::default()
        };
        let volume = build_study_volume(&files, &contract).expect("volume").volume;
        let segmentation = model.segment(&volume.hu, volume.shape, volume.spacing_mm).expect("model runs");
        let ch = |role: &str| segmentation.channels[m.channel(role).expect("role")].as_slice();
        let findings = compute(
            &Grid { hu: &volume.hu, shape: volume.shape, spacing_mm: volume.spacing_mm },
            &Masks::lungs(ch("left_lung"), ch("right_lung"), ch("lung_opacity")),
        )
        .expect("findings");
        let source = SourceStudy::read(&files[0]).expect("source study");
        let uids = ResultUids::derive(&source.study_instance_uid, &m.name, &m.version, 1);
        Sample { manifest: m.clone(), volume, segmentation, findings, source, uids }
    })
}

static NO_MEASURES: firstread_findings::measures::Measures =
    firstread_findings::measures::Measures { measurements: Vec::new(), classifications: Vec::new() };

fn input(s: &Sample, predecessor: Option<(String, String, String)>) -> ResultInput<'_> {
    ResultInput {
        volume: &s.volume,
        segmentation: &s.segmentation,
        findings: Some(&s.findings),
        measures: &NO_MEASURES,
        manifest: &s.manifest,
        source: &s.source,
        uids: &s.uids,
        study_version: 1,
        predecessor_sr: predecessor,
        content_date: "20240102".into(),
        content_time: "030405".into(),
    }
}

fn bytes(obj: &FileDicomObject<InMemDicomObject>) -> Vec<u8> {
    let mut out = Vec::new();
    obj.write_all(&mut out).expect("written");
    out
}

/// Writes `obj`, runs dciodvfy (no line may start with "Error") and dsrdump; returns the dump and
/// the object read back from the file.
fn validate(obj: &FileDicomObject<InMemDicomObject>, name: &str) -> (String, FileDicomObject<InMemDicomObject>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    obj.write_to_file(&path).expect("file written");
    if let Some(keep) = std::env::var_os("FIRSTREAD_SR_OUT") {
        // to look at the objects by hand (`FIRSTREAD_SR_OUT=/tmp/sr cargo test ...`)
        std::fs::create_dir_all(&keep).expect("output folder");
        std::fs::copy(&path, Path::new(&keep).join(name)).expect("copied");
    }
    let out = Command::new("/usr/bin/dciodvfy").arg(&path).output().expect("dciodvfy runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("--- dciodvfy {name}\n{report}");
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("Error")).collect();
    assert!(errors.is_empty(), "dciodvfy errors in {name}:\n{}", errors.join("\n"));
    let out = Command::new("/usr/bin/dsrdump").arg(&path).output().expect("dsrdump runs");
    let dump = String::from_utf8_lossy(&out.stdout).into_owned();
    let warnings = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("--- dsrdump {name}\n{dump}\n{warnings}");
    assert!(out.status.success(), "dsrdump failed: {warnings}");
    let back = OpenFileOptions::new().open_file(&path).expect("read back");
    (dump, back)
}

// --- content tree access ---

fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.element_opt(tag).ok().flatten().and_then(|e| e.items()).unwrap_or(&[])
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches([' ', '\0']).to_owned())
}

fn concept(obj: &InMemDicomObject) -> Option<String> {
    items(obj, tags::CONCEPT_NAME_CODE_SEQUENCE).first().and_then(|c| text(c, tags::CODE_VALUE))
}

fn code_value(obj: &InMemDicomObject) -> Option<String> {
    items(obj, tags::CONCEPT_CODE_SEQUENCE).first().and_then(|c| text(c, tags::CODE_VALUE))
}

fn value_type(obj: &InMemDicomObject) -> String {
    text(obj, tags::VALUE_TYPE).unwrap_or_default()
}

fn children(obj: &InMemDicomObject) -> &[InMemDicomObject] {
    items(obj, tags::CONTENT_SEQUENCE)
}

fn child<'a>(obj: &'a InMemDicomObject, code: &str) -> &'a InMemDicomObject {
    children(obj).iter().find(|c| concept(c).as_deref() == Some(code)).unwrap_or_else(|| panic!("no child {code}"))
}

fn numeric(obj: &InMemDicomObject) -> String {
    let mv = items(obj, tags::MEASURED_VALUE_SEQUENCE).first().expect("measured value");
    text(mv, tags::NUMERIC_VALUE).expect("numeric value").trim().to_owned()
}

fn num_child(group: &InMemDicomObject, code: &str) -> String {
    numeric(child(group, code))
}

/// Every content item of the tree, depth first.
fn walk<'a>(obj: &'a InMemDicomObject, out: &mut Vec<&'a InMemDicomObject>) {
    for c in children(obj) {
        out.push(c);
        walk(c, out);
    }
}

fn referenced_instance(obj: &InMemDicomObject) -> String {
    let r = items(obj, tags::REFERENCED_SOP_SEQUENCE).first().expect("referenced SOP");
    text(r, tags::REFERENCED_SOP_INSTANCE_UID).expect("instance uid")
}

/// SOP Instance UIDs of the Current Requested Procedure Evidence Sequence.
fn evidence(obj: &InMemDicomObject) -> HashSet<String> {
    let mut out = HashSet::new();
    for study in items(obj, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE) {
        for series in items(study, tags::REFERENCED_SERIES_SEQUENCE) {
            for sop in items(series, tags::REFERENCED_SOP_SEQUENCE) {
                out.insert(text(sop, tags::REFERENCED_SOP_INSTANCE_UID).expect("uid"));
            }
        }
    }
    out
}

fn lung_code(side: Side) -> &'static str {
    match side {
        Side::Left => "44029006",
        Side::Right => "3341006",
    }
}

fn site(group: &InMemDicomObject) -> Option<String> {
    children(group).iter().find(|c| concept(c).as_deref() == Some("363698007")).and_then(code_value)
}

#[test]
fn planar_sr_validates_and_carries_the_findings() {
    let s = sample();
    println!("findings: {:#?}", s.findings);
    let obj = build_sr(&input(s, None)).expect("SR built");
    let (dump, back) = validate(&obj, "sr.dcm");
    assert!(dump.contains("Imaging Measurement Report"), "{dump}");
    assert!(dump.contains("Left lung") && dump.contains("Right lung"), "{dump}");
    assert!(dump.contains("Image Region") && dump.contains("POLYLINE"), "{dump}");

    assert_eq!(text(&back, tags::SOP_CLASS_UID).as_deref(), Some(sr::COMPREHENSIVE_3D_SR_STORAGE));
    assert_eq!(back.meta().transfer_syntax().trim_end_matches('\0'), sr::EXPLICIT_VR_LITTLE_ENDIAN);
    assert_eq!(text(&back, tags::SOP_INSTANCE_UID), Some(s.uids.sr_instance.clone()));
    assert_eq!(text(&back, tags::SERIES_INSTANCE_UID), Some(s.uids.sr_series.clone()));
    assert_eq!(text(&back, tags::STUDY_INSTANCE_UID), Some(s.source.study_instance_uid.clone()));
    assert_eq!(text(&back, tags::COMPLETION_FLAG).as_deref(), Some("COMPLETE"));
    assert_eq!(text(&back, tags::VERIFICATION_FLAG).as_deref(), Some("UNVERIFIED"));
    assert_eq!(text(&back, tags::CONTENT_DATE).as_deref(), Some("20240102"));
    assert_eq!(
        text(&back, tags::SERIES_DESCRIPTION),
        Some(format!("firstread first read (covid19-lung-ct {})", s.manifest.version))
    );
    assert!(back.element(tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE).is_ok());
    assert!(back.element(tags::PREDECESSOR_DOCUMENTS_SEQUENCE).is_err());
    assert_eq!(
        text(&back, tags::PATIENT_ID),
        s.source.attributes.iter().find(|a| a.0 == tags::PATIENT_ID).map(|a| a.2.clone())
    );

    // one planar group per key slice, values as written
    let measurements = child(&back, "126010");
    let groups = children(measurements);
    assert_eq!(groups.len(), s.findings.key_slices.len());
    assert!(!groups.is_empty(), "the sample has opacity");
    for key in &s.findings.key_slices {
        let lung = s.findings.lungs.iter().find(|l| l.side == key.side).expect("lung");
        let group = groups.iter().find(|g| site(g).as_deref() == Some(lung_code(key.side))).expect("group of the lung");
        assert_eq!(num_child(group, "42798000"), format!("{:.2}", key.opacity_area_mm2));
        assert_eq!(num_child(group, "112031"), format!("{:.1}", key.opacity_mean_hu));
        assert_eq!(num_child(group, "INVOLVEMENT"), format!("{:.2}", lung.involvement.involvement_pct));
        assert_eq!(num_child(group, "OPACITY-VOLUME"), format!("{:.2}", lung.involvement.opacity_ml));
    }
    let qualitative = child(&back, "C0034375");
    assert_eq!(num_child(qualitative, "SEVERITY-SCORE"), s.findings.severity_score.to_string());
    let extent = child(qualitative, "EXTENT-CLASS");
    assert!(code_value(extent).is_some_and(|c| c.starts_with("SFR-")));
    let method = text(child(qualitative, "METHOD-LIMITS"), tags::TEXT_VALUE).expect("method text");
    assert!(
        method.contains("not a trained classifier")
            && method.contains("not a diagnosis")
            && method.contains("radiologist")
    );
    let schemes = items(&back, tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE);
    assert!(schemes.iter().any(|i| text(i, tags::CODING_SCHEME_DESIGNATOR).as_deref() == Some(LOCAL_SCHEME)));
}

#[test]
fn planar_sr_has_the_shape_ohif_needs() {
    let s = sample();
    let obj = build_sr(&input(s, None)).expect("SR built");
    let root: &InMemDicomObject = &obj;
    assert_eq!(concept(root).as_deref(), Some("126000"));
    let template =
        items(root, tags::CONTENT_TEMPLATE_SEQUENCE).first().and_then(|t| text(t, tags::TEMPLATE_IDENTIFIER));
    assert_eq!(template.as_deref(), Some("1500"));
    // every child of the root has a concept name; both containers present
    assert!(children(root).iter().all(|c| concept(c).is_some()));
    let library = child(child(root, "111028"), "126200");
    assert_eq!(children(library).iter().filter(|c| value_type(c) == "IMAGE").count(), s.volume.slices.len());
    for group in children(child(root, "126010")) {
        let content = children(group);
        // OHIF reads the concept name of every direct child and takes the first UIDREF as the tracking UID
        assert!(content.iter().all(|c| concept(c).is_some()));
        let first_uidref = content.iter().find(|c| value_type(c) == "UIDREF").expect("UIDREF");
        assert_eq!(concept(first_uidref).as_deref(), Some("112040"));
        let tracking = text(child(group, "112039"), tags::TEXT_VALUE);
        assert_eq!(tracking.as_deref(), Some(PLANAR_TRACKING_IDENTIFIER));
        // a group-level SCOORD (drawn), and the first NUM carries it too (measurement panel)
        let region = content.iter().find(|c| value_type(c) == "SCOORD").expect("group SCOORD");
        assert_eq!(concept(region).as_deref(), Some("111030"));
        assert_eq!(children(region).len(), 1);
        let first_num = content.iter().find(|c| value_type(c) == "NUM").expect("NUM");
        let inferred = children(first_num).iter().find(|c| value_type(c) == "SCOORD").expect("NUM's SCOORD");
        assert_eq!(text(inferred, tags::RELATIONSHIP_TYPE).as_deref(), Some("INFERRED FROM"));
        assert_eq!(children(inferred).len(), 1);
        assert_eq!(referenced_instance(&children(inferred)[0]), referenced_instance(&children(region)[0]));
    }
}

#[test]
fn outlines_lie_in_the_image_and_match_the_opacity() {
    let s = sample();
    let obj = build_sr(&input(s, None)).expect("SR built");
    let ev = evidence(&obj);
    let mut all = Vec::new();
    walk(&obj, &mut all);
    // every referenced instance is in the evidence
    for item in all.iter().filter(|c| value_type(c) == "IMAGE") {
        assert!(ev.contains(&referenced_instance(item)), "IMAGE reference missing from the evidence");
    }
    let [_, rows, cols] = s.volume.shape;
    let plane = rows * cols;
    let scoords: Vec<&&InMemDicomObject> = all.iter().filter(|c| value_type(c) == "SCOORD").collect();
    assert_eq!(scoords.len(), 3 * s.findings.key_slices.len());
    for sc in scoords {
        assert_eq!(text(sc, tags::GRAPHIC_TYPE).as_deref(), Some("POLYLINE"));
        let image = children(sc).first().expect("SELECTED FROM image");
        assert_eq!(text(image, tags::RELATIONSHIP_TYPE).as_deref(), Some("SELECTED FROM"));
        let uid = referenced_instance(image);
        assert!(ev.contains(&uid), "SCOORD image missing from the evidence");
        let k = s.volume.slices.iter().position(|sl| sl.sop_instance_uid == uid).expect("a source slice");
        let key = s.findings.key_slices.iter().find(|ks| ks.slice == k).expect("a key slice");
        let data = sc.element(tags::GRAPHIC_DATA).expect("graphic data").to_multi_float32().expect("FL");
        assert!(data.len() >= 8 && data.len() % 2 == 0 && data.len() <= 2 * sr::MAX_OUTLINE_POINTS);
        let points: Vec<(f64, f64)> = data.chunks(2).map(|p| (f64::from(p[0]), f64::from(p[1]))).collect();
        assert_eq!(points.first(), points.last(), "closed polyline repeats its first point");
        for &(x, y) in &points {
            assert!((0.0..=cols as f64).contains(&x) && (0.0..=rows as f64).contains(&y), "({x}, {y}) outside");
        }
        // area against the largest opacity component of that lung on that slice
        let lung = &s.segmentation.channels
            [s.manifest.channel(if key.side == Side::Left { "left_lung" } else { "right_lung" }).expect("lung")];
        let opacity = &s.segmentation.channels[s.manifest.channel("lung_opacity").expect("opacity")];
        let mask: Vec<u8> = (k * plane..(k + 1) * plane).map(|i| u8::from(lung[i] != 0 && opacity[i] != 0)).collect();
        let comps = independent_components(&mask, rows, cols);
        let largest = comps.iter().copied().max().expect("a component");
        let pixel_mm2 = s.volume.spacing_mm[1] * s.volume.spacing_mm[2];
        let polygon_mm2 = polygon_area(&points) * pixel_mm2;
        let component_mm2 = largest as f64 * pixel_mm2;
        println!(
            "{:?} slice {k}: {} components, largest {component_mm2:.1} mm2, slice total {:.1} mm2, polygon {polygon_mm2:.1} mm2, {} points",
            key.side,
            comps.len(),
            key.opacity_area_mm2,
            points.len()
        );
        assert!((polygon_mm2 - component_mm2).abs() <= 0.25 * component_mm2);
        assert_eq!(components(&mask, rows, cols).len(), comps.len());
        // orientation: the outline encloses the opacity pixels at their SOURCE positions
        // (Volume::source_pixel, pixel centres at +0.5); other components may lie outside
        let mut inside = 0usize;
        let mut total = 0usize;
        for r in 0..rows {
            for c in 0..cols {
                if mask[r * cols + c] != 0 {
                    total += 1;
                    let (row, col) = s.volume.source_pixel(r, c);
                    inside += usize::from(point_in_polygon(col as f64 + 0.5, row as f64 + 0.5, &points));
                }
            }
        }
        println!(
            "flips rows {} cols {}: {inside} of {total} opacity pixels inside",
            s.volume.flip_rows, s.volume.flip_cols
        );
        assert!(inside as f64 >= 0.9 * largest as f64, "{inside} of the largest component's {largest} pixels inside");
    }
}

/// Even-odd rule.
fn point_in_polygon(x: f64, y: f64, poly: &[(f64, f64)]) -> bool {
    let mut inside = false;
    let n = poly.len();
    for i in 0..n {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[(i + n - 1) % n];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
    }
    inside
}

/// 8-connected component sizes, written independently of `contour::components`.
fn independent_components(mask: &[u8], rows: usize, cols: usize) -> Vec<usize> {
    let mut seen = vec![false; mask.len()];
    let mut sizes = Vec::new();
    for start in 0..mask.len() {
        if mask[start] == 0 || seen[start] {
            continue;
        }
        let mut stack = vec![start];
        seen[start] = true;
        let mut n = 0;
        while let Some(i) = stack.pop() {
            n += 1;
            let (r, c) = ((i / cols) as i64, (i % cols) as i64);
            for dr in -1..=1 {
                for dc in -1..=1 {
                    let (nr, nc) = (r + dr, c + dc);
                    if nr < 0 || nc < 0 || nr >= rows as i64 || nc >= cols as i64 {
                        continue;
                    }
                    let j = nr as usize * cols + nc as usize;
                    if mask[j] != 0 && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        sizes.push(n);
    }
    sizes
}

#[test]
fn volumetric_sr_validates_and_references_the_seg() {
    let s = sample();
    let obj = build_volumetric_sr(&input(s, None)).expect("volumetric SR built");
    let (dump, back) = validate(&obj, "volumetric-sr.dcm");
    // a CID 7021 title other than 126000, so OHIF does not hydrate its TID 1411 groups
    assert!(dump.contains("Diagnostic imaging report") && dump.contains("Referenced Segment"), "{dump}");
    assert_eq!(concept(&back).as_deref(), Some("18748-4"));
    assert!(dump.contains("Left lung") && dump.contains("Right lung"), "{dump}");
    let (series, instance) = sr::volumetric_sr_uids(&s.uids);
    assert_eq!(text(&back, tags::SERIES_INSTANCE_UID), Some(series.clone()));
    assert_eq!(text(&back, tags::SOP_INSTANCE_UID), Some(instance));
    assert_ne!(series, s.uids.sr_series);
    assert_eq!(text(&back, tags::SERIES_DESCRIPTION).as_deref(), Some("firstread volumetric measurements"));
    let ev = evidence(&back);
    assert!(ev.contains(&s.uids.seg_instance));
    assert_eq!(ev.len(), s.volume.slices.len() + 1);

    let groups = children(child(&back, "126010"));
    assert_eq!(groups.len(), s.findings.lungs.len() + s.findings.zones.len());
    for g in groups {
        let seg = child(g, "121191");
        assert_eq!(referenced_instance(seg), s.uids.seg_instance);
        let number = items(seg, tags::REFERENCED_SOP_SEQUENCE)[0]
            .element(tags::REFERENCED_SEGMENT_NUMBER)
            .expect("segment number")
            .to_int::<u16>()
            .expect("US");
        let side = if site(g).as_deref() == Some("44029006") { Side::Left } else { Side::Right };
        let role = if side == Side::Left { "left_lung" } else { "right_lung" };
        assert_eq!(usize::from(number), s.manifest.channel(role).expect("channel") + 1);
    }
    for lung in &s.findings.lungs {
        let g = groups
            .iter()
            .find(|g| {
                site(g).as_deref() == Some(lung_code(lung.side))
                    && children(child(g, "363698007")).iter().all(|m| concept(m).as_deref() != Some("106233006"))
            })
            .expect("lung group");
        assert_eq!(num_child(g, "118565006"), format!("{:.2}", lung.involvement.lung_ml));
        assert_eq!(num_child(g, "OPACITY-VOLUME"), format!("{:.2}", lung.involvement.opacity_ml));
        assert_eq!(num_child(g, "INVOLVEMENT"), format!("{:.2}", lung.involvement.involvement_pct));
    }
    let zone_scores: u32 = groups
        .iter()
        .filter_map(|g| children(g).iter().find(|c| concept(c).as_deref() == Some("ZONE-SCORE")))
        .map(|n| numeric(n).parse::<u32>().expect("score"))
        .sum();
    assert_eq!(zone_scores, u32::from(s.findings.severity_score));
}

#[test]
fn building_twice_gives_the_same_bytes_and_predecessors_are_referenced() {
    let s = sample();
    let a = bytes(&build_sr(&input(s, None)).expect("SR"));
    let b = bytes(&build_sr(&input(s, None)).expect("SR"));
    assert_eq!(a, b);
    let a = bytes(&build_volumetric_sr(&input(s, None)).expect("SR"));
    let b = bytes(&build_volumetric_sr(&input(s, None)).expect("SR"));
    assert_eq!(a, b);

    let previous = ResultUids::derive(&s.source.study_instance_uid, &s.manifest.name, "0.0.9", 1);
    let pred = (sr::COMPREHENSIVE_3D_SR_STORAGE.to_owned(), previous.sr_instance.clone(), previous.sr_series.clone());
    let obj = build_sr(&input(s, Some(pred))).expect("SR");
    let (_, back) = validate(&obj, "sr-v2.dcm");
    let p = items(&back, tags::PREDECESSOR_DOCUMENTS_SEQUENCE);
    assert_eq!(p.len(), 1);
    let series = &items(&p[0], tags::REFERENCED_SERIES_SEQUENCE)[0];
    assert_eq!(text(series, tags::SERIES_INSTANCE_UID), Some(previous.sr_series));
    assert_eq!(referenced_instance(series), previous.sr_instance);
}

#[test]
fn mismatched_masks_are_an_error() {
    let s = sample();
    let mut seg = s.segmentation.clone();
    seg.shape[0] -= 1;
    let mut i = input(s, None);
    i.segmentation = &seg;
    assert!(build_sr(&i).is_err());
    assert!(build_volumetric_sr(&i).is_err());
}

#[test]
fn without_opacity_the_measurements_container_is_empty_but_present() {
    let s = sample();
    let mut seg = s.segmentation.clone();
    let opacity = s.manifest.channel("lung_opacity").expect("opacity channel");
    seg.channels[opacity].iter_mut().for_each(|v| *v = 0);
    let ch = |role: &str| seg.channels[s.manifest.channel(role).expect("role")].as_slice();
    let findings = compute(
        &Grid { hu: &s.volume.hu, shape: s.volume.shape, spacing_mm: s.volume.spacing_mm },
        &Masks::lungs(ch("left_lung"), ch("right_lung"), ch("lung_opacity")),
    )
    .expect("findings");
    assert!(findings.key_slices.is_empty());
    let mut i = input(s, None);
    i.segmentation = &seg;
    i.findings = Some(&findings);
    let obj = build_sr(&i).expect("SR built");
    let (dump, back) = validate(&obj, "sr-no-opacity.dcm");
    assert!(dump.contains("Imaging Measurements"), "{dump}");
    assert!(children(child(&back, "126010")).is_empty());
    assert_eq!(num_child(child(&back, "C0034375"), "SEVERITY-SCORE"), "0");
    let obj = build_volumetric_sr(&i).expect("volumetric SR built");
    validate(&obj, "volumetric-sr-no-opacity.dcm");
}

/// Runs dciodvfy only (for the SEG and key images built beside the SRs); no line may start with
/// "Error".
fn dciodvfy_only(obj: &FileDicomObject<InMemDicomObject>, name: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    obj.write_to_file(&path).expect("file written");
    let out = Command::new("/usr/bin/dciodvfy").arg(&path).output().expect("dciodvfy runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("--- dciodvfy {name}\n{report}");
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("Error")).collect();
    assert!(errors.is_empty(), "dciodvfy errors in {name}:\n{}", errors.join("\n"));
}

/// The sample with what the pleural-cavity step adds: a right pleural effusion (a 6-row layer of
/// +10 HU tissue posterior to the right lung on its 8 lowest slices), an empty left one, and a
/// dense dependent region (the right lung's 3 most posterior rows on those slices, +25 HU, set as
/// opacity). The mass stays a focal lesion.
struct Pleural {
    volume: Volume,
    segmentation: Segmentation,
    manifest: Manifest,
    findings: Findings,
    effusion_voxels: usize,
    first_slice: usize,
}

fn pleural() -> Pleural {
    let s = sample();
    let mut manifest = s.manifest.clone();
    for (role, label) in
        [("left_pleural_effusion", "Left pleural effusion"), ("right_pleural_effusion", "Right pleural effusion")]
    {
        if manifest.channel(role).is_none() {
            let mut out = manifest.outputs[2].clone();
            out.channel = manifest.outputs.len();
            out.name = role.into();
            out.segment_label = label.into();
            out.description = None;
            out.type_value = "60046008".into();
            out.type_meaning = "Pleural effusion".into();
            out.anatomic_region_scheme = None;
            out.anatomic_region_value = None;
            out.anatomic_region_meaning = None;
            out.recommended_display_rgb = [60, 200, 220];
            manifest.outputs.push(out);
        }
    }
    let mut volume = s.volume.clone();
    let [slices, rows, cols] = volume.shape;
    let n = slices * rows * cols;
    let ch = |role: &str| s.segmentation.channels[s.manifest.channel(role).expect("role")].clone();
    let (left, right, mut opacity) = (ch("left_lung"), ch("right_lung"), ch("lung_opacity"));
    let (mut effusion, mut dense) = (vec![0u8; n], vec![0u8; n]);
    let (first, _) = s.findings.lungs[1].slice_extent.expect("right lung extent");
    let mut effusion_voxels = 0;
    for k in first..first + 8 {
        for c in 0..cols {
            let Some(last) = (0..rows).rev().find(|&r| right[volume.index(k, r, c)] != 0) else { continue };
            for r in last.saturating_sub(2)..=last {
                let i = volume.index(k, r, c);
                if opacity[i] == 0 {
                    opacity[i] = 1;
                    dense[i] = 1;
                    volume.hu[i] = 25.0;
                }
            }
            for r in last + 1..(last + 7).min(rows) {
                let i = volume.index(k, r, c);
                if left[i] == 0 && right[i] == 0 {
                    effusion[i] = 1;
                    volume.hu[i] = 10.0;
                    effusion_voxels += 1;
                }
            }
        }
    }
    let empty = vec![0u8; n];
    let segmentation = Segmentation {
        channels: vec![left.clone(), right.clone(), opacity.clone(), empty.clone(), effusion.clone()],
        shape: volume.shape,
    };
    let findings = compute(
        &Grid { hu: &volume.hu, shape: volume.shape, spacing_mm: volume.spacing_mm },
        &Masks {
            effusion_left: Some(&empty),
            effusion_right: Some(&effusion),
            indeterminate: Some(&dense),
            ..Masks::lungs(&left, &right, &opacity)
        },
    )
    .expect("findings");
    Pleural { volume, segmentation, manifest, findings, effusion_voxels, first_slice: first }
}

/// The TEXT items of the planar SR's Qualitative Evaluations with concept `code`: (value, item).
fn texts<'a>(qualitative: &'a InMemDicomObject, code: &str) -> Vec<(String, &'a InMemDicomObject)> {
    children(qualitative)
        .iter()
        .filter(|c| concept(c).as_deref() == Some(code) && value_type(c) == "TEXT")
        .map(|c| (text(c, tags::TEXT_VALUE).expect("text value"), c))
        .collect()
}

#[test]
fn effusion_dense_region_and_focal_lesion_reach_the_srs_seg_and_key_images() {
    let s = sample();
    let p = pleural();
    let f = &p.findings;
    println!("effusions {:#?}\ndense {:#?}\nfocal {:#?}", f.effusions, f.indeterminate_dense, f.focal_lesions);
    assert_eq!(f.effusions.len(), 2);
    let right_effusion = f.effusions.iter().find(|e| e.side == Side::Right).expect("right effusion");
    assert_eq!(right_effusion.volume_ml, p.effusion_voxels as f64 * p.volume.voxel_volume_ml());
    assert!(right_effusion.volume_ml > 1.0, "{right_effusion:?}");
    assert_eq!(f.indeterminate_dense.len(), 1);
    assert!(!f.focal_lesions.is_empty(), "the right lung mass is a focal lesion");
    let caution = "the right lung measures 400 mL, 25 % of the other: complete opacification, collapse, a large \
                   effusion or resection are not excluded, and disease on that side may be under-estimated";
    // and a class the method's error allows besides the measured one ("possibly moderate")
    let borderline = firstread_findings::Uncertainty::new(9.5, [0.9, 0.0, 30.0, 4.5, 24.0, 80.0]);
    let with_caution = firstread_findings::Findings {
        cautions: vec![caution.to_owned()],
        extent_class: firstread_findings::ExtentClass::NoneOrMinimal,
        uncertainty: borderline,
        ..f.clone()
    };
    let f = &with_caution;
    let mut i = input(s, None);
    i.volume = &p.volume;
    i.segmentation = &p.segmentation;
    i.manifest = &p.manifest;
    i.findings = Some(f);

    // planar SR: a TEXT item per finding, its measurements as HAS PROPERTIES NUMs
    let (dump, back) = validate(&build_sr(&i).expect("SR built"), "sr-pleural.dcm");
    for name in ["Pleural effusion", "Dense dependent region", "Focal dense lung opacity", "Cranio-caudal extent"] {
        assert!(dump.contains(name), "{name} missing:\n{dump}");
    }
    let qualitative = child(&back, "C0034375");
    let effusions = texts(qualitative, "60046008");
    assert_eq!(effusions.len(), 2);
    for e in &f.effusions {
        let (_, item) = effusions.iter().find(|(t, _)| *t == e.text).unwrap_or_else(|| panic!("{} missing", e.text));
        assert_eq!(num_child(item, "118565006"), format!("{:.2}", e.volume_ml));
        assert_eq!(num_child(item, "CC-EXTENT"), format!("{:.1}", e.craniocaudal_extent_mm));
        let laterality = child(item, "272741003");
        assert_eq!(code_value(laterality).as_deref(), Some(if e.side == Side::Left { "7771000" } else { "24028007" }));
        assert!(children(item)
            .iter()
            .filter(|c| value_type(c) == "NUM")
            .all(|c| text(c, tags::RELATIONSHIP_TYPE).as_deref() == Some("HAS PROPERTIES")));
    }
    assert!(effusions.iter().any(|(t, _)| t == "left pleural effusion: none"));
    // the pipeline's caution, said in the report
    let cautions = texts(qualitative, "CAUTION");
    assert_eq!(cautions.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), vec![caution]);
    // the class the error allows is coded beside the measured one, and the ranges said as text
    let possible: Vec<Option<String>> = children(qualitative)
        .iter()
        .filter(|c| concept(c).as_deref() == Some("EXTENT-POSSIBLE") && value_type(c) == "CODE")
        .map(code_value)
        .collect();
    assert_eq!(possible, vec![Some("SFR-MODERATE".to_owned())]);
    assert_eq!(code_value(child(qualitative, "EXTENT-CLASS")).as_deref(), Some("SFR-MINIMAL"));
    let within = texts(qualitative, "WITHIN-ERROR");
    assert_eq!(within.len(), 1);
    assert_eq!(within[0].0, firstread_findings::vocabulary::uncertainty_text(f));
    assert!(within[0].0.contains("extent class none or minimal (<10 %) to moderate (10-25 %), CT severity score 9-14"));
    let dense = texts(qualitative, "DENSE-DEPENDENT");
    assert_eq!(dense.len(), 1);
    assert!(dense[0].0.starts_with("dense dependent region: effusion or consolidation, "), "{}", dense[0].0);
    assert_eq!(site(dense[0].1).as_deref(), Some(lung_code(Side::Right)));
    assert!(dense[0].0.ends_with(" mL (counted as opacity)"), "{}", dense[0].0);
    let focal = texts(qualitative, "FOCAL-OPACITY");
    assert_eq!(focal.len(), f.focal_lesions.len());
    for (lesion, (value, item)) in f.focal_lesions.iter().zip(&focal) {
        assert_eq!(value, &lesion.text);
        assert!(value.starts_with("focal opacity, ") && value.contains(" mL, right "), "{value}");
        assert_eq!(num_child(item, "118565006"), format!("{:.2}", lesion.volume_ml));
        assert_eq!(num_child(item, "EQUIV-DIAMETER"), format!("{:.1}", lesion.equivalent_diameter_mm));
        assert_eq!(num_child(item, "103339001"), format!("{:.1}", lesion.max_inplane_diameter_mm));
        assert_eq!(site(item).as_deref(), Some(lung_code(lesion.side)));
    }
    // the measurement groups are still only the planar ones OHIF can draw
    for group in children(child(&back, "126010")) {
        assert!(children(group).iter().any(|c| value_type(c) == "SCOORD"));
    }
    let basis = text(child(qualitative, "SUGGEST-BASIS"), tags::TEXT_VALUE).expect("basis");
    assert_eq!(basis, f.pattern_rationale);

    // volumetric SR: one TID 1411 group per effusion segment (segments 4 and 5)
    let (dump, back) = validate(&build_volumetric_sr(&i).expect("volumetric SR built"), "volumetric-sr-pleural.dcm");
    assert!(dump.contains("Pleural effusion"), "{dump}");
    let groups = children(child(&back, "126010"));
    assert_eq!(groups.len(), f.lungs.len() + f.zones.len() + 2);
    for e in &f.effusions {
        let label = format!("{} pleural effusion", e.side.name());
        let g = groups
            .iter()
            .find(|g| text(child(g, "112039"), tags::TEXT_VALUE).as_deref() == Some(label.as_str()))
            .unwrap_or_else(|| panic!("group {label}"));
        let number = items(child(g, "121191"), tags::REFERENCED_SOP_SEQUENCE)[0]
            .element(tags::REFERENCED_SEGMENT_NUMBER)
            .expect("segment number")
            .to_int::<u16>()
            .expect("US");
        let role = if e.side == Side::Left { "left_pleural_effusion" } else { "right_pleural_effusion" };
        assert_eq!(usize::from(number), p.manifest.channel(role).expect("channel") + 1);
        assert_eq!(code_value(child(g, "121071")).as_deref(), Some("60046008"));
        assert_eq!(num_child(g, "118565006"), format!("{:.2}", e.volume_ml));
    }

    // SEG: five segments (the empty left effusion keeps one empty frame), dciodvfy clean
    let seg = firstread_report::seg::build_seg(&i).expect("SEG built");
    dciodvfy_only(&seg, "seg-pleural.dcm");
    assert_eq!(items(&seg, tags::SEGMENT_SEQUENCE).len(), 5);
    // ... and three segments when the segmentation has only the TorchScript's channels
    let mut three = p.segmentation.clone();
    three.channels.truncate(3);
    let mut i3 = input(s, None);
    i3.volume = &p.volume;
    i3.segmentation = &three;
    i3.manifest = &p.manifest;
    i3.findings = Some(f);
    let seg3 = firstread_report::seg::build_seg(&i3).expect("SEG of 3 channels built");
    dciodvfy_only(&seg3, "seg-three.dcm");
    assert_eq!(items(&seg3, tags::SEGMENT_SEQUENCE).len(), 3);
    // the volumetric SR then references no effusion segment
    let back = build_volumetric_sr(&i3).expect("volumetric SR");
    assert_eq!(children(child(&back, "126010")).len(), f.lungs.len() + f.zones.len());

    // key images: valid, and the effusion overlay where the effusion is
    let images = firstread_report::sc::build_key_images(&i).expect("key images");
    for (n, image) in images.iter().enumerate() {
        dciodvfy_only(image, &format!("sc-pleural-{n}.dcm"));
        if let Some(keep) = std::env::var_os("FIRSTREAD_SR_OUT") {
            image.write_to_file(Path::new(&keep).join(format!("sc-pleural-{n}.dcm"))).expect("key image kept");
        }
    }
    let k = p.first_slice + 4;
    let key = firstread_report::sc::KeyImage { slice: k, zones: Vec::new() };
    let with = firstread_report::sc::render_key_image(&i, &key, 0, 1).expect("rendered");
    let without = firstread_report::sc::render_key_image(&i3, &key, 0, 1).expect("rendered");
    let [_, rows, cols] = p.volume.shape;
    let effusion = &p.segmentation.channels[4];
    let (mut on, mut differ) = (0, 0);
    for r in 0..rows {
        for c in 0..cols {
            if effusion[p.volume.index(k, r, c)] != 0 {
                on += 1;
                let (sr, sc) = p.volume.source_pixel(r, c);
                let at = (sr * cols + sc) * 3;
                differ += usize::from(with[at..at + 3] != without[at..at + 3]);
            }
        }
    }
    assert!(on > 0 && differ * 2 >= on, "{differ} of {on} effusion pixels coloured");

    // the caution is written on the key image, in the title's yellow, under the title: the same
    // image without it has fewer yellow pixels, and the two differ only in the top band
    let no_caution = firstread_findings::Findings { cautions: Vec::new(), ..f.clone() };
    let mut quiet = input(s, None);
    quiet.volume = &p.volume;
    quiet.segmentation = &p.segmentation;
    quiet.manifest = &p.manifest;
    quiet.findings = Some(&no_caution);
    let without_caution = firstread_report::sc::render_key_image(&quiet, &key, 0, 1).expect("rendered");
    // (glyph edges are blended with the dimmed band: yellowish is red well above blue)
    let yellow =
        |img: &[u8]| img.chunks_exact(3).filter(|px| px[0] > 100 && u16::from(px[2]) * 2 < u16::from(px[0])).count();
    assert!(yellow(&with) > 2 * yellow(&without_caution), "{} vs {}", yellow(&with), yellow(&without_caution));
    let changed_rows: Vec<usize> = (0..rows)
        .filter(|&r| with[r * cols * 3..(r + 1) * cols * 3] != without_caution[r * cols * 3..(r + 1) * cols * 3])
        .collect();
    assert!(changed_rows.iter().all(|&r| r < rows / 2), "rows changed: {changed_rows:?}");
}
