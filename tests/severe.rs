//! The first read on severe disease (issue: "the first read must see severe disease"): chest
//! phantoms with ribs, chest wall, spine, mediastinum and diaphragm carrying dependent
//! consolidation, masses against the mediastinum and the chest wall, and effusions
//! (`tests/src/phantom.rs`), run through the production pipeline (`analysis::read_volume`:
//! denoising, TorchScript through libtorch, the pleural-cavity step, the measurements), with
//! the truth counted from the voxels the phantom wrote.

use std::sync::Mutex;

use firstread::analysis::{read_volume, Read};
use firstread_e2e::phantom::{thorax, Against, Disease, Side, Thorax, ThoraxSpec};
use firstread_e2e::repo_root;
use firstread_findings::{compute, ExtentClass, Grid, Masks};
use firstread_inference::Model;

/// The COVID-19 findings of a read (the package has the extension).
fn covid(r: &Read) -> &firstread_findings::Findings {
    r.findings.as_ref().expect("covid19-lung-ct has the COVID-19 findings")
}

fn model() -> Mutex<Model> {
    Mutex::new(Model::load(&repo_root().join("models/covid19-lung-ct/0.2.4")).expect("model package loads"))
}

/// Runs the pipeline on a phantom; with `SEVERE_DUMP` set, writes what it found into
/// `$SEVERE_DUMP/<case>`.
fn read(model: &Mutex<Model>, t: &Thorax, case: &str) -> Read {
    let manifest = model.lock().expect("model").manifest.clone();
    let r = read_volume(model, &manifest, &t.hu, t.shape, t.spacing).expect("pipeline runs");
    if let Ok(dir) = std::env::var("SEVERE_DUMP") {
        dump_to(&format!("{dir}/{}", case.replace(' ', "-")), &r, t);
    }
    r
}

/// Writes the (denoised) HU, a label volume (1 lung, 3 lung outside the truth, 4 truth lung
/// missed, 5 effusion, 6 opacity) and the shape into `dir`, for looking at.
fn dump_to(dir: &str, r: &Read, t: &Thorax) {
    {
        std::fs::create_dir_all(dir).expect("dump dir");
        let bytes: Vec<u8> = r.hu.as_deref().unwrap_or(&t.hu).iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(format!("{dir}/hu.f32"), bytes).expect("dump");
        let ch = &r.segmentation.channels;
        let lab: Vec<u8> = (0..t.hu.len())
            .map(|i| {
                let truth_lung = t.truth.lung_mask[0][i] != 0 || t.truth.lung_mask[1][i] != 0;
                let lung = ch[0][i] != 0 || ch[1][i] != 0;
                match (
                    lung,
                    truth_lung,
                    ch[2][i] != 0,
                    ch.get(3).is_some_and(|c| c[i] != 0) || ch.get(4).is_some_and(|c| c[i] != 0),
                ) {
                    (_, _, _, true) => 5,
                    (true, _, true, _) => 6,
                    (true, true, false, _) => 1,
                    (true, false, false, _) => 3,
                    (false, true, _, _) => 4,
                    _ => 0,
                }
            })
            .collect();
        std::fs::write(format!("{dir}/lab.u8"), lab).expect("dump");
        if t.truth.opacity_mask.len() == t.hu.len() {
            std::fs::write(format!("{dir}/truth_opacity.u8"), &t.truth.opacity_mask).expect("dump");
        }
        if t.truth.mass_mask.contains(&1) {
            std::fs::write(format!("{dir}/mass.u8"), &t.truth.mass_mask).expect("dump");
        }
        std::fs::write(format!("{dir}/shape.txt"), format!("{} {} {}", t.shape[0], t.shape[1], t.shape[2]))
            .expect("dump");
    }
}

/// With `SEVERE_DUMP` set, writes into `$SEVERE_DUMP/<case>` what `dump_to` writes, plus the
/// voxels the generator changed (`changed.u8`) and the read's lung (bit 0) and opacity (bit 1)
/// after (`pred.u8`) and before (`before.u8`) the pattern was written.
fn dump_inserted(
    case: &str,
    ins: &firstread_e2e::inserted::Inserted,
    [before, r]: [&Read; 2],
    shape: [usize; 3],
    spacing: [f64; 3],
) {
    let Ok(dir) = std::env::var("SEVERE_DUMP") else { return };
    let dir = format!("{dir}/{}", case.replace(' ', "-"));
    std::fs::create_dir_all(&dir).expect("dump dir");
    std::fs::write(format!("{dir}/changed.u8"), &ins.changed_mask).expect("dump");
    for (name, read) in [("pred", r), ("before", before)] {
        let ch = &read.segmentation.channels;
        let bits: Vec<u8> =
            (0..ch[0].len()).map(|i| u8::from(ch[0][i] != 0 || ch[1][i] != 0) + 2 * u8::from(ch[2][i] != 0)).collect();
        std::fs::write(format!("{dir}/{name}.u8"), bits).expect("dump");
    }
    let truth = firstread_e2e::phantom::Truth {
        lung_mask: [0, 1].map(|s| ins.lung_mask.iter().map(|&l| u8::from(usize::from(l) == s + 1)).collect()),
        ..Default::default()
    };
    dump_to(&dir, r, &Thorax { hu: ins.hu.clone(), shape, spacing, labels: Vec::new(), truth });
}

/// Prints the dense dependent regions the pleural-cavity step found.
fn regions(r: &Read) {
    for g in &r.dense_regions {
        eprintln!(
            "|   | {:?} {:?} {:.1} mL (added {:.1}, of it followed through air bronchograms {:.1}), slices {:?}, mean {:.0} HU, air {:.2} % |",
            g.side, g.kind, g.volume_ml, g.added_ml, g.followed_ml, g.slices, g.mean_hu, g.air_pct
        );
    }
}

/// (lung mL, opacity mL, effusion mL) per side [left, right] as measured.
fn measured(r: &Read) -> [[f64; 3]; 2] {
    let f = covid(r);
    let mut out = [[0.0; 3]; 2];
    for (i, side) in [firstread_findings::Side::Left, firstread_findings::Side::Right].into_iter().enumerate() {
        let l = f.lungs.iter().find(|l| l.side == side).expect("lung").involvement;
        let e = f.effusions.iter().find(|e| e.side == side).map_or(0.0, |e| e.volume_ml);
        out[i] = [l.lung_ml, l.opacity_ml, e];
    }
    out
}

/// The same per side from the phantom's truth.
fn truth(t: &Thorax) -> [[f64; 3]; 2] {
    let tr = &t.truth;
    [0, 1].map(|i| [tr.ml(tr.lung[i]), tr.ml(tr.opacity[i]), tr.ml(tr.effusion[i])])
}

/// Extent class and severity score the truth masks give (the measurements on the truth), and
/// the six zones' involvement (%) measured / truth.
fn truth_scores(t: &Thorax, measured: &firstread_findings::Findings) -> (ExtentClass, u8, f64, String) {
    let tr = &t.truth;
    let f = compute(
        &Grid { hu: &t.hu, shape: t.shape, spacing_mm: t.spacing },
        &Masks::lungs(&tr.lung_mask[0], &tr.lung_mask[1], &tr.opacity_mask),
    )
    .expect("findings on the truth");
    let zones = measured
        .zones
        .iter()
        .zip(&f.zones)
        .map(|(m, t)| {
            format!(
                "{:?} {:?} {:.1} / {:.1} % ({} / {})",
                m.side, m.level, m.involvement.involvement_pct, t.involvement.involvement_pct, m.score, t.score
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    (f.extent_class, f.severity_score, f.total.involvement_pct, zones)
}

fn rel(measured: f64, truth: f64) -> f64 {
    if truth == 0.0 {
        if measured == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (measured - truth) / truth
    }
}

fn line(name: &str, m: &[[f64; 3]; 2], t: &[[f64; 3]; 2]) -> String {
    format!(
        "| {name} | {:.0} / {:.0} ({:+.1} %) | {:.0} / {:.0} ({:+.1} %) | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} |",
        m[0][0],
        t[0][0],
        100.0 * rel(m[0][0], t[0][0]),
        m[1][0],
        t[1][0],
        100.0 * rel(m[1][0], t[1][0]),
        m[0][1],
        t[0][1],
        m[1][1],
        t[1][1],
        m[0][2],
        t[0][2],
        m[1][2],
        t[1][2],
    )
}

const SHAPE: [usize; 3] = [64, 240, 240];
const SPACING: [f64; 3] = [5.0, 1.5, 1.5];

#[test]
fn dependent_consolidation_is_lung_and_opacity() {
    let model = model();
    let mut failures = Vec::new();
    eprintln!(
        "| case | left lung mL (truth) | right lung | left opacity | right opacity | left effusion | right effusion |"
    );
    let both = vec![Side::Left, Side::Right];
    let cases: Vec<(String, Vec<Side>, f64)> = [10.0, 25.0, 40.0]
        .into_iter()
        .flat_map(|d| {
            [(format!("both sides {d} mm"), both.clone(), d), (format!("right {d} mm"), vec![Side::Right], d)]
        })
        .collect();
    for (name, sides, depth_mm) in cases {
        let spec = ThoraxSpec::standard(SHAPE, SPACING).with(Disease::DependentConsolidation {
            sides: sides.clone(),
            depth_mm,
            ground_glass_mm: 10.0,
        });
        let t = thorax(&spec);
        let r = read(&model, &t, &name);
        let (m, tr) = (measured(&r), truth(&t));
        eprintln!("{}", line(&name, &m, &tr));
        regions(&r);
        // The lung within 5 % and the opacity within 15 % (the targets, met in every case:
        // -3 to +12 %).
        for i in 0..2 {
            if rel(m[i][0], tr[i][0]).abs() > 0.05 {
                failures.push(format!("{name}: lung {i} {:.0} mL vs {:.0}", m[i][0], tr[i][0]));
            }
            if tr[i][1] > 5.0 && rel(m[i][1], tr[i][1]).abs() > 0.15 {
                failures.push(format!("{name}: opacity {i} {:.1} mL vs {:.1}", m[i][1], tr[i][1]));
            }
            // the healthy side: 5.9 mL today, 5.4 of it at the tip of the apex
            if tr[i][1] == 0.0 && m[i][1] > 10.0 {
                failures.push(format!("{name}: healthy side {i} reads {:.1} mL of opacity", m[i][1]));
            }
        }
        let f = covid(&r);
        let (class, score, pct, zones) = truth_scores(&t, f);
        eprintln!("|   | zones, measured / truth: {zones} |");
        let u = &f.uncertainty;
        eprintln!(
            "|   | class {} (truth {}), score {} [{}-{}] (truth {score}), involvement {:.1} % [{:.1}-{:.1}] (truth {pct:.1} %) |",
            firstread_findings::vocabulary::class_text(f),
            class.label(),
            f.severity_score,
            u.severity_score[0],
            u.severity_score[1],
            f.total.involvement_pct,
            u.involvement_pct[0],
            u.involvement_pct[1],
        );
        // the class and the score right in every case (0.2.3: the thinnest bilateral layer read
        // 9.9 % for a truth of 10.4 %, one class low, and the bilateral 25 mm layer scored 7 for 8;
        // 0.2.4 keeps the fat-band ramp from air to consolidation in the layer)
        if f.extent_class != class {
            failures.push(format!("{name}: class {} vs {}", f.extent_class.label(), class.label()));
        }
        // what the result says it may be holds the truth: the class, the score and the involvement
        // within the ranges the method's validated error gives (a class one band off is said as
        // "possibly", never as a certain class)
        if class < u.extent_class[0] || class > u.extent_class[1] {
            failures.push(format!("{name}: truth class {} outside {:?}", class.label(), u.extent_class));
        }
        if score < u.severity_score[0] || score > u.severity_score[1] {
            failures.push(format!("{name}: truth score {score} outside {:?}", u.severity_score));
        }
        if pct < u.involvement_pct[0] || pct > u.involvement_pct[1] {
            failures.push(format!("{name}: truth involvement {pct:.1} % outside {:?}", u.involvement_pct));
        }
        // zones are thirds of each lung's volume; 0.2.2's gas step keeps the stomach's bubble from
        // moving the left lung's cuts
        if f.severity_score != score {
            failures.push(format!("{name}: score {} vs {score}", f.severity_score));
        }
        if f.total.involvement_pct < 0.7 * pct {
            failures.push(format!("{name}: involvement {:.1} % vs {pct:.1} %", f.total.involvement_pct));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn masses_against_the_mediastinum_and_the_chest_wall_are_inside_the_lung() {
    let model = model();
    let mut failures = Vec::new();
    for (name, side, against) in
        [("mediastinum", Side::Right, Against::Mediastinum), ("posterior wall", Side::Left, Against::PosteriorWall)]
    {
        let spec = ThoraxSpec::standard(SHAPE, SPACING).with(Disease::Mass { side, against, diameter_mm: 40.0 });
        let t = thorax(&spec);
        let r = read(&model, &t, &format!("mass {name}"));
        regions(&r);
        let mass = &t.truth.mass_mask;
        let lung = &r.segmentation.channels[side.index()];
        let opacity = &r.segmentation.channels[2];
        let n = mass.iter().filter(|&&v| v != 0).count();
        let inside = mass.iter().zip(lung).filter(|(m, l)| **m != 0 && **l != 0).count();
        let counted = mass.iter().zip(opacity).filter(|(m, o)| **m != 0 && **o != 0).count();
        let (pi, pc) = (100.0 * inside as f64 / n as f64, 100.0 * counted as f64 / n as f64);
        // said as a focal lesion (10 mm or more), and the lung not grown beyond it
        let focal = covid(&r).focal_lesions.iter().map(|l| l.volume_ml).fold(0.0, f64::max);
        let m = measured(&r);
        let tr = truth(&t);
        let lung_error = 100.0 * rel(m[side.index()][0], tr[side.index()][0]);
        eprintln!(
            "| mass against the {name} | {:.1} mL | {pi:.1} % in the lung mask | {pc:.1} % counted as opacity | \
             focal lesion {focal:.1} mL | lung {lung_error:+.1} % |",
            t.truth.ml(n)
        );
        if focal < 0.5 || lung_error.abs() > 5.0 {
            failures.push(format!("{name}: focal lesion {focal:.1} mL, lung {lung_error:+.1} %"));
        }
        // the issue asks 90 % of each (0.2.0 before the bays step: 88 / 72 % and 5 / 0 %)
        if pi < 90.0 || pc < 90.0 {
            failures.push(format!("{name}: {pi:.1} % inside, {pc:.1} % opacity"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn effusion_is_reported_and_not_counted_as_opacity() {
    let model = model();
    let healthy = read(&model, &thorax(&ThoraxSpec::standard(SHAPE, SPACING)), "healthy");
    let base = measured(&healthy);
    let mut failures = Vec::new();
    for (side, depth_mm) in [(Side::Left, 20.0), (Side::Right, 40.0), (Side::Left, 40.0)] {
        let t = thorax(&ThoraxSpec::standard(SHAPE, SPACING).with(Disease::Effusion { side, depth_mm }));
        let name = format!("effusion {side:?} {depth_mm} mm");
        let r = read(&model, &t, &name);
        let (m, tr) = (measured(&r), truth(&t));
        eprintln!("{}", line(&name, &m, &tr));
        regions(&r);
        let i = side.index();
        // the target: within 20 % (today -17 to -1 %)
        if m[i][2] < 0.8 * tr[i][2] || m[i][2] > 1.2 * tr[i][2] {
            failures.push(format!("{name}: effusion {:.1} mL vs {:.1}", m[i][2], tr[i][2]));
        }
        let grown = m[i][1] - base[i][1];
        // the target: at most 10 % of the effusion (today 0 to 3 %: the pieces of liver
        // or spleen that walks cross at the dome are counted, not carried down)
        if grown > 0.1 * tr[i][2] {
            failures.push(format!("{name}: opacity grew {grown:.1} mL for {:.1} mL of effusion", tr[i][2]));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The sample's volume, of the B40f series or its B70f reconstruction.
fn sample_volume(series: &str) -> firstread_volume::Volume {
    let files = firstread_e2e::series_files(series);
    firstread_volume::build_study_volume(&files, &firstread_volume::VolumeContract::default()).expect("volume").volume
}

/// The model, its manifest, the bundled sample (B40f) and the pipeline's read of it as it is.
fn sample_as_read() -> (Mutex<Model>, firstread_inference::Manifest, firstread_volume::Volume, Read) {
    let model = model();
    let v = sample_volume("lung-dx-a0002-b40f");
    let manifest = model.lock().expect("model").manifest.clone();
    let read = read_volume(&model, &manifest, &v.hu, v.shape, v.spacing_mm).expect("pipeline");
    (model, manifest, v, read)
}

fn lungs_of(r: &Read) -> [firstread_findings::Involvement; 2] {
    [firstread_findings::Side::Left, firstread_findings::Side::Right]
        .map(|s| covid(r).lungs.iter().find(|l| l.side == s).expect("lung").involvement)
}

/// The severe pattern written into the real sample (`tests/src/inserted.rs`: dependent
/// consolidation with air bronchograms along the posterior wall of both lower lungs and ground
/// glass in front of it, the truth counted from the voxels changed).
#[test]
fn severe_pneumonia_written_into_the_real_sample() {
    let (model, manifest, v, before) = sample_as_read();
    let mut rows = Vec::new();
    for (name, sides) in [("both lower lungs", vec![Side::Left, Side::Right]), ("right lower lung", vec![Side::Right])]
    {
        let sides: Vec<Side> = sides;
        let ins = firstread_e2e::inserted::dependent_pneumonia(
            &v.hu,
            v.shape,
            v.spacing_mm,
            &sides,
            firstread_e2e::inserted::DEFAULT_DEPTH_MM,
            firstread_e2e::inserted::DEFAULT_GROUND_GLASS_MM,
            7,
        );
        let after = read_volume(&model, &manifest, &ins.hu, v.shape, v.spacing_mm).expect("pipeline");
        dump_inserted(name, &ins, [&before, &after], v.shape, v.spacing_mm);
        regions(&after);
        let (b, a) = (lungs_of(&before), lungs_of(&after));
        for side in [Side::Left, Side::Right] {
            let i = side.index();
            let written = ins.ml(ins.opacity(side));
            let grown = a[i].opacity_ml - b[i].opacity_ml;
            rows.push((name, side, written, grown, b[i].lung_ml, a[i].lung_ml));
            eprintln!(
                "| {name} | {side:?} | written {written:.1} mL | opacity grew {grown:.1} mL ({:.0} %) | lung {:.0} -> {:.0} mL |",
                if written > 0.0 { 100.0 * grown / written } else { 0.0 },
                b[i].lung_ml,
                a[i].lung_ml
            );
        }
        eprintln!(
            "| {name} | total | involvement {:.1} % -> {:.1} % | {} -> {} | score {} -> {} | {:?} |",
            covid(&before).total.involvement_pct,
            covid(&after).total.involvement_pct,
            covid(&before).extent_class.label(),
            firstread_findings::vocabulary::class_text(covid(&after)),
            covid(&before).severity_score,
            firstread_findings::vocabulary::score_text(covid(&after)),
            covid(&after).pattern,
        );
        // what a triage tool must never do: call it negative; the bilateral pattern (22 % of the
        // lungs written) must leave "none or minimal"
        assert_ne!(covid(&after).pattern, firstread_findings::Pattern::Negative, "{name}");
        if sides.len() == 2 {
            assert_ne!(covid(&after).extent_class, ExtentClass::NoneOrMinimal, "{name}");
        }
    }
    for (name, side, written, grown, lung_before, lung_after) in rows {
        if written > 0.0 {
            // the side written: the written volume within 15 % (the target; today 92-95
            // %, a few mL of it leaking into the spleen's edge below the dome, README)
            assert!(
                grown >= 0.85 * written && grown <= 1.15 * written,
                "{name} {side:?}: opacity grew {grown:.1} mL for {written:.1} mL written"
            );
            // its lung shrinks by what is not found (-8 % today), never by all of it
            assert!(lung_after >= 0.88 * lung_before, "{name} {side:?}: lung {lung_before:.0} -> {lung_after:.0} mL");
        } else {
            // the other side unchanged within 2 %
            assert!(grown.abs() <= 0.02 * lung_before.max(1.0), "{name} {side:?}: opacity changed by {grown:.1} mL");
            assert!((lung_after - lung_before).abs() <= 0.02 * lung_before, "{name} {side:?}: lung changed");
        }
    }
}

/// Lobar consolidation: the same pattern written deeper into both lower lungs of the real sample
/// (60, 100 and 160 mm of consolidation, the lower lobes' posterior half to the whole of them).
/// The pleural-cavity step's walks fill only layers up to `MAX_DEPTH_MM` (60 mm) thick and start
/// no walk in a slice without aerated lung (0.2.2 read 22.8 / 19.2 / 14.0 % for truths of 33.9 /
/// 39.1 / 42.4 %); since 0.2.3 each consolidation is followed through its air bronchograms
/// (`firstread_lungs::lobar`). Asserted: the involvement within 15 % of the truth and its class;
/// at least 85 % of the written voxels read as opacity on each side, at most 15 % of it read
/// beside them; each lung's opacity grows by the written volume within 15 %; at most 35 % of the
/// opacity read before on a side is lost (the sample's tumour in the right lung, 121 mL of
/// opacity, which the model drops once the lung around it is consolidated and the
/// pleural-cavity step takes back; model README, "Lobar consolidation").
#[test]
fn lobar_consolidation_written_into_the_real_sample_is_followed_through_its_air_bronchograms() {
    let (model, manifest, v, before) = sample_as_read();
    let b = covid(&before).total;
    for (depth_mm, ground_glass_mm) in [(60.0, 20.0), (100.0, 30.0), (160.0, 40.0)] {
        let both = [Side::Left, Side::Right];
        let ins = firstread_e2e::inserted::dependent_pneumonia(
            &v.hu,
            v.shape,
            v.spacing_mm,
            &both,
            depth_mm,
            ground_glass_mm,
            7,
        );
        let after = read_volume(&model, &manifest, &ins.hu, v.shape, v.spacing_mm).expect("pipeline");
        let name = format!("lobar {depth_mm:.0} mm");
        dump_inserted(&name, &ins, [&before, &after], v.shape, v.spacing_mm);
        let written: f64 = both.iter().map(|&side| ins.ml(ins.opacity(side))).sum();
        // the truth: the sample's own opacity as read before, plus what was written, of the
        // lung as read before (writing replaces lung voxels: the lung volume does not change)
        let truth_pct = 100.0 * (b.opacity_ml + written) / b.lung_ml;
        let (ba, aa) = (lungs_of(&before), lungs_of(&after));
        let (opacity_after, opacity_before) = (&after.segmentation.channels[2], &before.segmentation.channels[2]);
        let cols = v.shape[2];
        for side in both {
            let i = side.index();
            let grown = aa[i].opacity_ml - ba[i].opacity_ml;
            let w = ins.ml(ins.opacity(side));
            // by voxel: the written ones read as opacity; new opacity where nothing was written;
            // the opacity read before that is no longer read (the side by the body's midline)
            let on_side = |x: usize| (x % cols >= ins.midline_col) == (side == Side::Left);
            let (mut found, mut outside, mut lost) = (0usize, 0usize, 0usize);
            for x in (0..ins.changed_mask.len()).filter(|&x| on_side(x)) {
                match (ins.changed_mask[x] != 0, opacity_before[x] != 0, opacity_after[x] != 0) {
                    (true, _, true) => found += 1,
                    (false, false, true) => outside += 1,
                    (false, true, false) => lost += 1,
                    _ => {}
                }
            }
            let (found, outside, lost) = (ins.ml(found), ins.ml(outside), ins.ml(lost));
            eprintln!(
                "| {name} | {side:?} | written {w:.1} mL | opacity grew {grown:.1} mL ({:.0} %) | written read {:.0} % | new outside it {outside:.1} mL | earlier opacity lost {lost:.1} mL | lung {:.0} -> {:.0} mL |",
                100.0 * grown / w,
                100.0 * found / w,
                ba[i].lung_ml,
                aa[i].lung_ml
            );
            // the written consolidation and ground glass read (89-92 % today), little beside it
            assert!(found >= 0.85 * w, "{name} {side:?}: {found:.1} of {w:.1} mL written read");
            assert!(outside <= 0.15 * w, "{name} {side:?}: {outside:.1} mL read beside {w:.1} mL written");
            assert!(
                grown >= 0.85 * w && grown <= 1.15 * w,
                "{name} {side:?}: opacity grew {grown:.1} mL for {w:.1} mL"
            );
            // the right lung holds the sample's tumour (121 mL of opacity before), which the
            // model drops once the lung around it is consolidated; the pleural-cavity step
            // encloses it again and follows it up (33-35 mL of the model's blocky rim around it
            // stay lost; without the following of the ring, 100-106 mL)
            assert!(
                lost <= 0.35 * ba[i].opacity_ml,
                "{name} {side:?}: {lost:.1} of {:.1} mL of earlier opacity lost",
                ba[i].opacity_ml
            );
        }
        let f = covid(&after);
        eprintln!(
            "| {name} | total | involvement {:.1} % (truth {truth_pct:.1} %, {}) | {} | score {} |",
            f.total.involvement_pct,
            ExtentClass::from_pct(truth_pct).label(),
            firstread_findings::vocabulary::class_text(f),
            firstread_findings::vocabulary::score_text(f),
        );
        assert_ne!(f.pattern, firstread_findings::Pattern::Negative, "{name}");
        let measured = f.total.involvement_pct;
        assert!(
            (measured - truth_pct).abs() <= 0.15 * truth_pct,
            "{name}: involvement {measured:.1} % for a truth of {truth_pct:.1} %"
        );
        assert_eq!(f.extent_class, ExtentClass::from_pct(truth_pct), "{name}");
    }
}

/// A field of view narrower than the chest. The sample cropped in-plane: through the body only
/// (the lungs whole in the image) the read stays what it was and says nothing; through the lungs
/// (a few mm, then 30 px of each) the lungs lose far more than what is cut (the model takes air at
/// the border for air outside the body: 490 mL of 2807 and 0 % involvement at 30 px), and the
/// result says that the field of view cuts the lungs (`firstread_lungs::fov`).
#[test]
fn a_field_of_view_that_cuts_the_lungs_is_said() {
    let (model, manifest, v, full) = sample_as_read();
    let [slices, rows, cols] = v.shape;
    // (first row, end row, first column, end column, whether the crop cuts the lungs); the
    // lungs span rows 103-380 and columns 66-449 of the 512 x 512 slices
    for (r0, r1, c0, c1, cuts_lungs) in [(75, 512, 45, 470, false), (60, 460, 70, 442, true), (90, 430, 95, 417, true)]
    {
        let (rr, cc) = (r1 - r0, c1 - c0);
        let mut hu = Vec::with_capacity(slices * rr * cc);
        for k in 0..slices {
            for y in r0..r1 {
                hu.extend_from_slice(&v.hu[(k * rows + y) * cols + c0..(k * rows + y) * cols + c1]);
            }
        }
        let cropped = read_volume(&model, &manifest, &hu, [slices, rr, cc], v.spacing_mm).expect("pipeline");
        let ch = &cropped.segmentation.channels;
        let said = firstread_lungs::fov::caution(&hu, &[&ch[0], &ch[1]], [slices, rr, cc], v.spacing_mm[1]);
        let (a, b) = (lungs_of(&full), lungs_of(&cropped));
        eprintln!(
            "| crop rows {r0}-{r1}, columns {c0}-{c1} | lungs L {:.0} -> {:.0}, R {:.0} -> {:.0} mL | involvement {:.1} -> \
             {:.1} % | {} |",
            a[0].lung_ml,
            b[0].lung_ml,
            a[1].lung_ml,
            b[1].lung_ml,
            covid(&full).total.involvement_pct,
            covid(&cropped).total.involvement_pct,
            said.as_deref().unwrap_or("no caution")
        );
        assert_eq!(said.is_some(), cuts_lungs, "rows {r0}-{r1}, columns {c0}-{c1}: {said:?}");
        if !cuts_lungs {
            for side in 0..2 {
                assert!((b[side].lung_ml - a[side].lung_ml).abs() <= 0.01 * a[side].lung_ml, "lung {side} changed");
            }
        }
    }
}

/// The sample's HU resampled to `spacing_z` mm slices by linear interpolation along z (thin
/// slices, as most chest CT is read; the sample itself is 8 mm).
fn thin_slices(v: &firstread_volume::Volume, spacing_z: f64) -> (Vec<f32>, [usize; 3], [f64; 3]) {
    let [slices, rows, cols] = v.shape;
    let plane = rows * cols;
    let extent = (slices - 1) as f64 * v.spacing_mm[0];
    let n = (extent / spacing_z).floor() as usize + 1;
    let mut hu = vec![0f32; n * plane];
    for k in 0..n {
        let z = k as f64 * spacing_z / v.spacing_mm[0];
        let lo = (z.floor() as usize).min(slices - 1);
        let hi = (lo + 1).min(slices - 1);
        let t = (z - lo as f64) as f32;
        for p in 0..plane {
            hu[k * plane + p] = v.hu[lo * plane + p] * (1.0 - t) + v.hu[hi * plane + p] * t;
        }
    }
    (hu, [n, rows, cols], [spacing_z, v.spacing_mm[1], v.spacing_mm[2]])
}

/// The severe pattern written into the sample resampled to 2 mm slices: the opacity found per
/// side (the pleural cavity's mm constants were first measured on 8 mm real and 5 mm phantom
/// slices).
#[test]
fn severe_pneumonia_on_thin_slices() {
    let model = model();
    let manifest = model.lock().expect("model").manifest.clone();
    let v = sample_volume("lung-dx-a0002-b40f");
    let (hu, shape, spacing) = thin_slices(&v, 2.0);
    let before = read_volume(&model, &manifest, &hu, shape, spacing).expect("pipeline");
    regions(&before);
    let ins = firstread_e2e::inserted::severe_covid(&hu, shape, spacing, 7);
    let after = read_volume(&model, &manifest, &ins.hu, shape, spacing).expect("pipeline");
    regions(&after);
    dump_inserted("thin", &ins, [&before, &after], shape, spacing);
    let (b, a) = (lungs_of(&before), lungs_of(&after));
    for side in [Side::Left, Side::Right] {
        let i = side.index();
        let written = ins.ml(ins.opacity(side));
        let grown = a[i].opacity_ml - b[i].opacity_ml;
        eprintln!(
            "| 2 mm slices | {side:?} | written {written:.1} mL | opacity {:.1} -> {:.1} mL, grew {grown:.1} mL ({:.0} %) | lung {:.0} -> {:.0} mL |",
            b[i].opacity_ml,
            a[i].opacity_ml,
            100.0 * grown / written,
            b[i].lung_ml,
            a[i].lung_ml
        );
        // left 99 %, right 89 %: on 2 mm slices the sample's own tumour in the right lower lung
        // is no longer enclosed by aerated lung once the layer behind it is consolidated, and the
        // model drops it in every slice; the layer carried up behind it encloses it again and
        // it is followed into the hilum (follow.rs). Before that: 50 %. Target 85 %.
        let floor = 0.85;
        assert!(grown >= floor * written, "{side:?}: opacity grew {grown:.1} mL for {written:.1} mL written");
    }
    eprintln!(
        "| 2 mm slices | total | involvement {:.1} % -> {:.1} % | {} -> {} |",
        covid(&before).total.involvement_pct,
        covid(&after).total.involvement_pct,
        covid(&before).extent_class.label(),
        covid(&after).extent_class.label()
    );
    eprintln!(
        "| 2 mm slices | {} x {} x {} | model {:.2} s | pleural cavity, bays and caps {:.2} s (test build, for orientation) |",
        shape[0],
        shape[1],
        shape[2],
        after.model_time.as_secs_f64(),
        after.refine_time.as_secs_f64()
    );
    assert_ne!(covid(&after).extent_class, ExtentClass::NoneOrMinimal);
}

/// The same acquisition reconstructed with a soft (B40f) and a sharp (B70f) kernel: lung and
/// opacity volumes within 15 % of each other.
#[test]
fn soft_and_sharp_kernels_give_the_same_answer() {
    let model = model();
    let manifest = model.lock().expect("model").manifest.clone();
    let [soft, sharp] = ["lung-dx-a0002-b40f", "lung-dx-a0002-b70f"].map(|s| {
        let v = sample_volume(s);
        read_volume(&model, &manifest, &v.hu, v.shape, v.spacing_mm).expect("pipeline")
    });
    let sharp_noise = sharp.denoise.and_then(|d| d.noise_hu).unwrap_or(0.0);
    assert!(sharp.denoise.is_some_and(|d| d.sigma_mm > 0.0), "the sharp kernel is smoothed: {:?}", sharp.denoise);
    assert!(soft.denoise.is_some_and(|d| d.sigma_mm == 0.0), "the soft kernel is not: {:?}", soft.denoise);
    let (s, h) = (lungs_of(&soft), lungs_of(&sharp));
    for i in 0..2 {
        eprintln!(
            "| side {i} | lung B40f {:.1} / B70f {:.1} mL | opacity {:.1} / {:.1} mL | B70f noise {sharp_noise:.0} HU |",
            s[i].lung_ml, h[i].lung_ml, s[i].opacity_ml, h[i].opacity_ml
        );
        assert!((h[i].lung_ml - s[i].lung_ml).abs() <= 0.15 * s[i].lung_ml, "lung {i}");
        // within 15 %, or 5 mL for the few mL a normal lung reads
        let tolerance = (0.15 * s[i].opacity_ml).max(5.0);
        assert!((h[i].opacity_ml - s[i].opacity_ml).abs() <= tolerance, "opacity {i}");
    }
    // the mass is in the right lung: both read it as a focal lesion of the same size within 15 %
    let mass = |r: &Read| covid(r).focal_lesions.iter().map(|l| l.volume_ml).fold(0.0, f64::max);
    let (ms, mh) = (mass(&soft), mass(&sharp));
    eprintln!("| focal lesion | B40f {ms:.1} mL | B70f {mh:.1} mL |");
    assert!(ms > 20.0 && (mh - ms).abs() <= 0.15 * ms, "focal lesion {ms:.1} vs {mh:.1} mL");
}
