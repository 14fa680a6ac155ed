//! Rules of the builder on synthetic series written to a temporary directory.

mod common;

use common::{base_value, dose_report, series, write_all, Slice, SIZE};
use dicom_core::{PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use firstread_volume::{build_study_volume, Refusal, StudyVolume, VolumeContract};

const A: &str = "1.2.826.0.1.3680043.8.498.10";
const B: &str = "1.2.826.0.1.3680043.8.498.11";
const C: &str = "1.2.826.0.1.3680043.8.498.12";

fn build(slices: &[Slice]) -> Result<StudyVolume, Refusal> {
    build_with(slices, &VolumeContract::default())
}

fn build_with(slices: &[Slice], contract: &VolumeContract) -> Result<StudyVolume, Refusal> {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = write_all(dir.path(), slices);
    build_study_volume(&files, contract)
}

fn hu(study: &StudyVolume, k: usize, r: usize, c: usize) -> f32 {
    study.volume.hu[study.volume.index(k, r, c)]
}

#[test]
fn slices_are_ordered_by_position_not_instance_number() {
    let mut slices = series(A, 16);
    for (i, s) in slices.iter_mut().enumerate() {
        s.text(tags::INSTANCE_NUMBER, VR::IS, &(100 - i).to_string());
    }
    slices.reverse();
    let study = build(&slices).expect("volume");
    let v = &study.volume;
    assert_eq!(v.shape, [16, SIZE, SIZE]);
    assert_eq!(v.spacing_mm, [2.5, 0.5, 0.5]);
    assert_eq!(v.origin_mm, [-8.0, -8.0, 0.0]);
    assert_eq!(v.axes, [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]);
    assert!((v.voxel_volume_ml() - 0.000625).abs() < 1e-12);
    for k in 0..16 {
        assert_eq!(hu(&study, k, 3, 4), 10.0 * k as f32, "slice {k}");
        assert_eq!(v.slices[k].position_mm[2], 2.5 * k as f64);
        assert_eq!(v.slices[k].instance_number, Some(100 - k as i32));
    }
    assert_eq!(v.to_patient(15.0, 31.0, 0.0), [-8.0, 7.5, 37.5]);
    assert_eq!(v.source_pixel(1, 2), (1, 2));
    assert!(!v.flip_rows && !v.flip_cols);
    assert_eq!(v.series_instance_uid, A);
    assert_eq!(v.study_instance_uid, common::STUDY);
    assert_eq!(v.frame_of_reference_uid.as_deref(), Some(common::FRAME_OF_REFERENCE));
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    assert_eq!(study.decisions.len(), 1);
    assert!(study.decisions[0].chosen);
    assert_eq!(study.decisions[0].slices, 16);
    assert_eq!(study.decisions[0].convolution_kernel.as_deref(), Some("B30f"));
    assert_eq!(study.decisions[0].slice_thickness_mm, Some(2.5));
}

#[test]
fn missing_middle_slice_is_refused_with_where() {
    let mut slices = series(A, 17);
    slices.remove(8);
    let err = build(&slices).expect_err("gap");
    assert_eq!(err, Refusal::MissingSlices { gap_mm: 5.0, median_spacing_mm: 2.5, at_mm: 17.5 });
    let text = err.to_string();
    assert!(text.contains("5.00 mm") && text.contains("17.50 mm") && text.contains("2.50 mm"), "{text}");
}

#[test]
fn positions_stepping_off_the_normal_are_gantry_tilt() {
    let mut slices = series(A, 16);
    for (i, s) in slices.iter_mut().enumerate() {
        // 0.5 mm in y per 2.5 mm in z: atan(0.2) = 11.31 degrees.
        s.position([-8.0, -8.0 + 0.5 * i as f64, 2.5 * i as f64]);
    }
    match build(&slices) {
        Err(Refusal::GantryTilt { degrees }) => assert!((degrees - 11.3099).abs() < 0.01, "{degrees}"),
        other => panic!("expected GantryTilt, got {other:?}"),
    }
}

#[test]
fn gantry_detector_tilt_attribute_is_refused() {
    let mut slices = series(A, 16);
    for s in &mut slices {
        s.text(tags::GANTRY_DETECTOR_TILT, VR::DS, "15");
    }
    let err = build(&slices).expect_err("tilt");
    assert_eq!(err, Refusal::GantryTilt { degrees: 15.0 });
    assert!(err.to_string().contains("15.00 degrees"));
    // A tilt of 0.3 degrees is within the default 0.5.
    for s in &mut slices {
        s.text(tags::GANTRY_DETECTOR_TILT, VR::DS, "-0.3");
    }
    assert!(build(&slices).is_ok());
}

#[test]
fn a_single_slice_is_too_few() {
    let err = build(&series(A, 1)).expect_err("one slice");
    assert_eq!(err, Refusal::TooFewSlices { series_instance_uid: A.to_owned(), found: 1, required: 16 });
    assert!(err.to_string().contains("1 slice(s)"));
}

#[test]
fn localizer_is_skipped_and_axial_series_chosen() {
    let mut slices = series(A, 16);
    for i in 0..2 {
        let mut scout = Slice::new(B, i);
        scout
            .text(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\LOCALIZER")
            .text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\0\\-1")
            .text(tags::SERIES_DESCRIPTION, VR::LO, "Topogram");
        slices.push(scout);
    }
    let study = build(&slices).expect("volume");
    assert_eq!(study.volume.series_instance_uid, A);
    assert_eq!(study.decisions.len(), 2);
    let chosen = &study.decisions[0];
    assert!(chosen.chosen && chosen.series_instance_uid == A);
    assert!(chosen.reason.starts_with("chosen: 16 slices at 2.50 mm"), "{}", chosen.reason);
    let scout = &study.decisions[1];
    assert!(!scout.chosen);
    assert_eq!(scout.series_instance_uid, B);
    assert_eq!(scout.series_description.as_deref(), Some("Topogram"));
    assert_eq!(scout.slices, 2);
    assert!(scout.reason.contains("localizer/scout (Image Type ORIGINAL\\PRIMARY\\LOCALIZER)"), "{}", scout.reason);
}

#[test]
fn duplicate_slice_is_dropped_with_warning() {
    let mut slices = series(A, 16);
    let mut copy = Slice::new(A, 5);
    copy.text(tags::SOP_INSTANCE_UID, VR::UI, &format!("{A}.99"))
        .text(tags::INSTANCE_NUMBER, VR::IS, "99")
        .pixels(vec![0; SIZE * SIZE]);
    slices.insert(0, copy);
    let study = build(&slices).expect("volume");
    let v = &study.volume;
    assert_eq!(v.shape[0], 16);
    assert_eq!(v.slices[5].sop_instance_uid, format!("{A}.6"));
    assert_eq!(hu(&study, 5, 0, 0), 50.0);
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert!(v.warnings[0].starts_with("duplicate slice at z=12.50 mm dropped"), "{}", v.warnings[0]);
    assert!(v.warnings[0].contains(&format!("{A}.99")));
}

/// Padding written -2000 as SS, 63536 as US and as UN in a signed image (all mean stored -2000),
/// and -2000 as SS or UN in an unsigned image (meaning stored 63536). The files really carry those VRs;
/// dicom-rs itself re-reads the element as SS in a signed image, the builder re-reads the value's
/// bit pattern by Pixel Representation in every case.
#[test]
fn pixel_padding_value_follows_pixel_representation() {
    let variants: [(u16, VR, PrimitiveValue, u16); 5] = [
        (1, VR::SS, PrimitiveValue::from(-2000i16), 0xF830),
        (1, VR::US, PrimitiveValue::from(63536u16), 0xF830),
        (1, VR::UN, PrimitiveValue::from(vec![0x30u8, 0xF8]), 0xF830),
        (0, VR::SS, PrimitiveValue::from(-2000i16), 0xF830),
        (0, VR::UN, PrimitiveValue::from(vec![0x30u8, 0xF8]), 0xF830),
    ];
    let contract = VolumeContract { padding_hu: -1100.0, ..VolumeContract::default() };
    for (pixel_representation, vr, value, padding_word) in variants {
        let case = format!("Pixel Representation {pixel_representation}, VR {vr:?}");
        let mut slices = series(A, 16);
        for s in &mut slices {
            s.us(tags::PIXEL_REPRESENTATION, pixel_representation)
                .element(tags::PIXEL_PADDING_VALUE, vr, value.clone())
                .set_pixel(0, 0, padding_word)
                .set_pixel(0, 1, padding_word + 1);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let bytes = std::fs::read(slices[0].write(dir.path(), "check.dcm")).expect("read back");
        assert!(bytes.windows(6).any(|w| w[..4] == [0x28, 0x00, 0x20, 0x01] && w[4..] == *vr.to_string().as_bytes()));
        let study = build_with(&slices, &contract).unwrap_or_else(|e| panic!("{case}: {e}"));
        let next = if pixel_representation == 1 { -1999.0 } else { 63537.0 };
        assert_eq!(hu(&study, 3, 0, 0), -1100.0, "{case}");
        assert_eq!(hu(&study, 3, 0, 1), next - 1024.0, "{case}");
        assert_eq!(hu(&study, 3, 5, 5), 30.0, "{case}");
    }
}

#[test]
fn pixel_padding_range_limit_masks_a_range() {
    let mut slices = series(A, 16);
    for s in &mut slices {
        s.element(tags::PIXEL_PADDING_VALUE, VR::SS, PrimitiveValue::from(-2000i16))
            .element(tags::PIXEL_PADDING_RANGE_LIMIT, VR::SS, PrimitiveValue::from(-1000i16))
            .set_pixel(0, 0, (-1500i16) as u16)
            .set_pixel(0, 1, (-999i16) as u16);
    }
    let study = build(&slices).expect("volume");
    assert_eq!(hu(&study, 0, 0, 0), -1024.0);
    assert_eq!(hu(&study, 0, 0, 1), -999.0 - 1024.0);
}

/// 12 bits stored, signed, written without sign extension above bit 11 (as JPEG codecs return
/// them): 0x0830 is -2000.
#[test]
fn signed_values_are_sign_extended_from_bits_stored() {
    let mut slices = series(A, 16);
    for s in &mut slices {
        s.us(tags::BITS_STORED, 12).us(tags::HIGH_BIT, 11).set_pixel(2, 2, 0x0830).set_pixel(2, 3, 0xF830);
    }
    let study = build(&slices).expect("volume");
    assert_eq!(hu(&study, 0, 2, 2), -3024.0);
    assert_eq!(hu(&study, 0, 2, 3), -3024.0);
}

#[test]
fn missing_rescale_warns_and_hu_is_the_stored_value() {
    let mut slices = series(A, 16);
    for s in &mut slices {
        s.remove(tags::RESCALE_SLOPE).remove(tags::RESCALE_INTERCEPT);
    }
    let study = build(&slices).expect("volume");
    assert_eq!(hu(&study, 4, 10, 10), f32::from(base_value(4)));
    assert_eq!(
        study.volume.warnings,
        ["Rescale Slope/Intercept missing in 16 of 16 slices: 1/0 assumed (HU = stored value)"]
    );
}

#[test]
fn rescale_slope_and_intercept_apply_per_slice() {
    let mut slices = series(A, 16);
    slices[7].text(tags::RESCALE_SLOPE, VR::DS, "2").text(tags::RESCALE_INTERCEPT, VR::DS, "-2048");
    let study = build(&slices).expect("volume");
    assert_eq!(hu(&study, 7, 0, 0), 140.0);
    assert_eq!(hu(&study, 6, 0, 0), 60.0);
}

/// Column cosines (0,-1,0): source row 0 is the most posterior row. The canonical grid runs
/// anterior -> posterior, so source row r lands in canonical row 31 - r.
#[test]
fn flipped_rows_are_restored_to_canonical_orientation() {
    let mut slices = series(A, 16);
    for (i, s) in slices.iter_mut().enumerate() {
        s.text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\-1\\0")
            .position([-8.0, 7.5, 2.5 * i as f64])
            .set_pixel(2, 5, 1024 + 777);
    }
    let study = build(&slices).expect("volume");
    let v = &study.volume;
    assert!(v.flip_rows && !v.flip_cols);
    assert_eq!(hu(&study, 4, 29, 5), 777.0);
    assert_eq!(hu(&study, 4, 2, 5), 40.0);
    assert_eq!(v.source_pixel(29, 5), (2, 5));
    // The marker's patient position: IPP + 5 x 0.5 along x + 2 x 0.5 along -y.
    assert_eq!(v.to_patient(4.0, 29.0, 5.0), [-5.5, 6.5, 10.0]);
    assert_eq!(v.origin_mm, [-8.0, -8.0, 0.0]);
    assert_eq!(v.axes[1], [0.0, 1.0, 0.0]);
}

/// Row cosines (-1,0,0) and column cosines (0,-1,0), slices stored superior first.
#[test]
fn flipped_rows_and_columns_and_descending_slices_are_restored() {
    let mut slices = series(A, 16);
    for (i, s) in slices.iter_mut().enumerate() {
        s.text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "-1\\0\\0\\0\\-1\\0")
            .position([7.5, 7.5, 100.0 - 2.5 * i as f64])
            .pixels(vec![base_value(15 - i) as u16; SIZE * SIZE])
            .set_pixel(0, 0, 1024 + 500);
    }
    let study = build(&slices).expect("volume");
    let v = &study.volume;
    assert!(v.flip_rows && v.flip_cols);
    assert_eq!(v.slices[0].position_mm[2], 62.5);
    assert_eq!(hu(&study, 0, 0, 0), 0.0);
    assert_eq!(hu(&study, 15, 5, 5), 150.0);
    // Source (0, 0) is the left-most (x = 7.5), posterior-most (y = 7.5) pixel: canonical (31, 31).
    assert_eq!(hu(&study, 3, 31, 31), 500.0);
    assert_eq!(v.to_patient(3.0, 31.0, 31.0), [7.5, 7.5, 70.0]);
    assert_eq!(v.origin_mm, [-8.0, -8.0, 62.5]);
    assert_eq!(v.axes, [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]);
}

#[test]
fn ds_and_is_values_with_spaces_and_leading_zeros_are_read() {
    let mut slices = series(A, 16);
    for (i, s) in slices.iter_mut().enumerate() {
        s.text(tags::IMAGE_POSITION_PATIENT, VR::DS, &format!(" -008.0\\-8 \\ 00{}\0", 2.5 * i as f64))
            .text(tags::PIXEL_SPACING, VR::DS, "0.500 \\0000.5")
            .text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, " 1.0\\0\\0 \\ 0\\01\\ 0")
            .text(tags::RESCALE_SLOPE, VR::DS, " 1 ")
            .text(tags::RESCALE_INTERCEPT, VR::DS, "-01024 ")
            .text(tags::INSTANCE_NUMBER, VR::IS, &format!(" 0{} ", i + 1))
            .text(tags::SLICE_THICKNESS, VR::DS, "");
    }
    let study = build(&slices).expect("volume");
    assert_eq!(study.volume.spacing_mm, [2.5, 0.5, 0.5]);
    assert_eq!(study.volume.origin_mm, [-8.0, -8.0, 0.0]);
    assert_eq!(study.volume.slices[3].instance_number, Some(4));
    assert_eq!(hu(&study, 3, 0, 0), 30.0);
    assert_eq!(study.decisions[0].slice_thickness_mm, None);
    assert!(study.volume.warnings.is_empty(), "{:?}", study.volume.warnings);
}

#[test]
fn dose_report_inside_the_ct_series_is_ignored() {
    let mut slices = series(A, 16);
    slices.push(dose_report(A, 1));
    let study = build(&slices).expect("volume");
    assert_eq!(study.volume.shape[0], 16);
    assert_eq!(
        study.volume.warnings,
        ["instances of the series ignored: 1 x not a CT image: X-Ray Radiation Dose SR Storage (1.2.840.10008.5.1.4.1.1.88.67)"]
    );
}

#[test]
fn study_without_ct_images_has_no_suitable_series() {
    let mut sc = Slice::new(B, 0);
    sc.text(tags::SOP_CLASS_UID, VR::UI, uids::SECONDARY_CAPTURE_IMAGE_STORAGE);
    let mut enhanced = Slice::new(C, 0);
    enhanced.text(tags::SOP_CLASS_UID, VR::UI, uids::ENHANCED_CT_IMAGE_STORAGE);
    let slices = vec![dose_report(A, 1), sc, enhanced];
    match build(&slices) {
        Err(Refusal::NoSuitableSeries { decisions }) => {
            assert_eq!(decisions.len(), 3);
            assert!(decisions.iter().all(|d| !d.chosen));
            assert!(decisions[0].reason.contains("X-Ray Radiation Dose SR Storage"), "{}", decisions[0].reason);
            assert!(decisions[1].reason.contains("Secondary Capture Image Storage"), "{}", decisions[1].reason);
            assert!(decisions[2].reason.contains("Enhanced CT (multi-frame) is not supported yet"));
        }
        other => panic!("expected NoSuitableSeries, got {other:?}"),
    }
}

#[test]
fn derived_reformat_is_skipped() {
    let mut slices = series(A, 16);
    let mut mip = series(B, 16);
    for s in &mut mip {
        s.text(tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY\\AXIAL\\MIP");
    }
    slices.extend(mip);
    let study = build(&slices).expect("volume");
    assert_eq!(study.volume.series_instance_uid, A);
    assert!(study.decisions[1].reason.contains("derived or secondary image"), "{}", study.decisions[1].reason);
}

#[test]
fn coronal_series_is_not_axial() {
    let mut slices = series(A, 16);
    for (i, s) in slices.iter_mut().enumerate() {
        s.text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\0\\-1").position([-8.0, 2.5 * i as f64, 8.0]);
    }
    match build(&slices) {
        Err(Refusal::NotAxial { plane, row_cosines, column_cosines }) => {
            assert_eq!(plane, "coronal");
            assert_eq!((row_cosines, column_cosines), ([1.0, 0.0, 0.0], [0.0, 0.0, -1.0]));
        }
        other => panic!("expected NotAxial, got {other:?}"),
    }
}

#[test]
fn mixed_rows_or_pixel_spacing_is_inconsistent_geometry() {
    let mut slices = series(A, 16);
    slices[3].us(tags::ROWS, 16).pixels(vec![0; 16 * SIZE]);
    let err = build(&slices).expect_err("mixed rows");
    assert!(matches!(&err, Refusal::InconsistentGeometry(m) if m.contains("Rows x Columns (32x32 vs 16x32)")), "{err}");
    let mut slices = series(A, 16);
    slices[9].text(tags::PIXEL_SPACING, VR::DS, "0.7\\0.7");
    let err = build(&slices).expect_err("mixed spacing");
    assert!(matches!(&err, Refusal::InconsistentGeometry(m) if m.contains("Pixel Spacing")), "{err}");
}

#[test]
fn non_uniform_and_too_large_spacing_are_refused() {
    let mut slices = series(A, 16);
    for (i, s) in slices.iter_mut().enumerate() {
        let z = 2.5 * i as f64 + if i % 2 == 1 { 0.4 } else { 0.0 };
        s.position([-8.0, -8.0, z]);
    }
    match build(&slices) {
        Err(Refusal::NonUniformSpacing { min_mm, max_mm, .. }) => {
            assert!((min_mm - 2.1).abs() < 1e-9 && (max_mm - 2.9).abs() < 1e-9, "{min_mm} {max_mm}");
        }
        other => panic!("expected NonUniformSpacing, got {other:?}"),
    }
    let mut slices = series(A, 16);
    for (i, s) in slices.iter_mut().enumerate() {
        s.position([-8.0, -8.0, 12.0 * i as f64]);
    }
    assert_eq!(build(&slices).expect_err("12 mm"), Refusal::SpacingTooLarge { spacing_mm: 12.0, max_mm: 10.0 });
}

#[test]
fn thinner_slices_then_softer_kernel_are_preferred() {
    // A: 16 x 2.5 mm, soft. B: 32 x 1.25 mm over the same range, soft. C: as A with a sharp kernel.
    let mut slices = series(A, 16);
    for i in 0..32 {
        let mut s = Slice::new(B, i);
        s.position([-8.0, -8.0, 1.25 * i as f64]);
        slices.push(s);
    }
    for mut s in series(C, 16) {
        s.text(tags::CONVOLUTION_KERNEL, VR::SH, "B70f");
        slices.push(s);
    }
    let study = build(&slices).expect("volume");
    assert_eq!(study.volume.series_instance_uid, B);
    let reasons: Vec<(&str, bool, &str)> =
        study.decisions.iter().map(|d| (d.series_instance_uid.as_str(), d.chosen, d.reason.as_str())).collect();
    assert_eq!(reasons[0].0, B);
    assert!(reasons[0].2.contains("preferred over 2 other candidate series"), "{}", reasons[0].2);
    assert_eq!(reasons[1].0, A);
    assert!(reasons[1].2.contains("it has thinner slices"), "{}", reasons[1].2);
    assert_eq!(reasons[2].0, C);

    // Without B, the soft kernel wins over the sharp one.
    slices.retain(|s| s.obj.get(tags::SERIES_INSTANCE_UID).and_then(|e| e.to_str().ok()).as_deref() != Some(B));
    let study = build(&slices).expect("volume");
    assert_eq!(study.volume.series_instance_uid, A);
    assert!(
        study.decisions[1].reason.contains("it has a softer reconstruction kernel"),
        "{}",
        study.decisions[1].reason
    );
}

#[test]
fn longer_coverage_is_preferred_over_thinner_slices() {
    let mut slices = series(A, 40);
    for i in 0..20 {
        let mut s = Slice::new(B, i);
        s.position([-8.0, -8.0, 1.0 * i as f64]);
        slices.push(s);
    }
    let study = build(&slices).expect("volume");
    assert_eq!(study.volume.series_instance_uid, A);
    assert!(study.decisions[1].reason.contains("it covers more of the z-range"), "{}", study.decisions[1].reason);
}

#[test]
fn unreadable_file_is_an_io_refusal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = write_all(dir.path(), &series(A, 16));
    let junk = dir.path().join("junk.dcm");
    std::fs::write(&junk, b"not dicom").expect("write");
    files.push(junk.clone());
    match build_study_volume(&files, &VolumeContract::default()) {
        Err(Refusal::Io { path, .. }) => assert_eq!(path, junk),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn corrupt_pixel_data_is_a_decode_refusal() {
    let mut slices = series(A, 16);
    slices[4].pixels(vec![0; 10]);
    match build(&slices) {
        Err(Refusal::Decode { sop_instance_uid, message }) => {
            assert_eq!(sop_instance_uid, format!("{A}.5"));
            assert!(!message.is_empty());
        }
        other => panic!("expected Decode, got {other:?}"),
    }
}

#[test]
fn decisions_serialise_to_json() {
    let study = build(&series(A, 16)).expect("volume");
    let json = serde_json::to_string(&study.decisions).expect("json");
    assert!(json.contains("\"chosen\":true") && json.contains("\"convolution_kernel\":\"B30f\""), "{json}");
}

#[test]
fn no_files_is_no_suitable_series() {
    let err = build_study_volume(&[], &VolumeContract::default()).expect_err("no files");
    assert_eq!(err, Refusal::NoSuitableSeries { decisions: Vec::new() });
    assert_eq!(err.to_string(), "no suitable CT series in the study: no files");
}

#[test]
fn a_series_of_a_body_part_the_model_does_not_take_is_skipped() {
    // A: 16 chest slices. B: 40 head slices, which would win on coverage and slices alone.
    let mut slices = series(A, 16);
    for s in &mut slices {
        s.text(tags::BODY_PART_EXAMINED, VR::CS, "CHEST ");
    }
    for mut s in series(B, 40) {
        s.text(tags::BODY_PART_EXAMINED, VR::CS, "HEAD");
        slices.push(s);
    }
    let chest =
        firstread_store::candidate::Takes { body_part: vec!["CHEST".into(), "LUNG".into()], ..Default::default() };
    let contract = VolumeContract { takes: chest.clone(), ..VolumeContract::default() };
    let study = build_with(&slices, &contract).expect("volume");
    assert_eq!(study.volume.series_instance_uid, A);
    let head = study.decisions.iter().find(|d| d.series_instance_uid == B).expect("decision for B");
    assert!(!head.chosen);
    assert_eq!(
        head.reason,
        "skipped: Body Part Examined \"HEAD\"; the model takes Body Part Examined CHEST or LUNG (or absent)"
    );
    // A model taking any body part reads the longer head series.
    assert_eq!(build(&slices).expect("volume").volume.series_instance_uid, B);

    // Only the head series: nothing suitable, and the decision says why.
    let head_only: Vec<Slice> = series(B, 40)
        .into_iter()
        .map(|mut s| {
            s.text(tags::BODY_PART_EXAMINED, VR::CS, "HEAD");
            s
        })
        .collect();
    match build_with(&head_only, &contract) {
        Err(Refusal::NoSuitableSeries { decisions }) => {
            assert_eq!(decisions.len(), 1);
            assert!(decisions[0].reason.contains("Body Part Examined \"HEAD\""), "{}", decisions[0].reason);
        }
        other => panic!("expected no suitable series, got {:?}", other.map(|s| s.volume.series_instance_uid)),
    }

    // Without Body Part Examined, the series is taken unless the model says otherwise.
    let bare = series(A, 16);
    assert_eq!(build_with(&bare, &contract).expect("volume").volume.series_instance_uid, A);
    let strict = VolumeContract {
        takes: firstread_store::candidate::Takes { body_part_absent: false, ..chest },
        ..VolumeContract::default()
    };
    assert!(matches!(build_with(&bare, &strict), Err(Refusal::NoSuitableSeries { .. })));
}
