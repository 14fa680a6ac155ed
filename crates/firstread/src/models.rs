//! Model packages as plug-ins: which versions are installed, which a node runs, and how two
//! versions of one model compare on the studies both analysed.
//!
//! A package is a folder `<models_dir>/<name>/<version>/` holding `manifest.toml` and the
//! TorchScript it names. `[worker] models` lists the **active** models (`name`: its highest
//! installed version that is not a shadow; `name@version`: that version); absent, every package
//! under `models_dir` is active at its highest installed version that is not a shadow. `[worker]
//! shadow` lists `name@version`s that analyse the same studies without their results leaving the
//! node: written and indexed with "SHADOW" in their series descriptions, never exported, never
//! notified, never shown as the study's read on the triage page. [`plan`] checks all of it at
//! start-up; [`compare`] is the one statement behind `firstread models compare` and
//! `GET /api/models/compare`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use firstread_queue::assembly::ModelVersion;
use serde::Serialize;
use sqlx::{PgPool, Row};

/// One model version a node runs: what assembly creates jobs for and where its package is.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRun {
    /// Name, version and role (active or shadow).
    pub model: ModelVersion,
    /// Its package folder, `<models_dir>/<name>/<version>`.
    pub dir: PathBuf,
    /// Its manifest, once [`read_manifests`] read it (`WorkerConfig::model_runs`); `None` from
    /// [`plan`] alone.
    pub manifest: Option<firstread_inference::Manifest>,
}

/// Orders version strings component by component (split at `.` and `-`), numerically where
/// both components are numbers, else as text: `0.10.0` > `0.9.0` > `0.9`.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |v: &str| v.split(['.', '-']).map(str::to_owned).collect::<Vec<_>>();
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            // a number sorts after text in the same place
            (Ok(_), Err(_)) => Ordering::Greater,
            (Err(_), Ok(_)) => Ordering::Less,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    pa.len().cmp(&pb.len())
}

/// Whether `part` can name a folder under `models_dir` (no separator, not `.` or `..`, not hidden).
fn is_folder_name(part: &str) -> bool {
    !part.is_empty() && !part.starts_with('.') && !part.contains(['/', '\\', '\0', '@'])
}

/// The installed packages: name -> versions, lowest first. A version is a folder holding
/// `manifest.toml`.
///
/// # Errors
/// `models_dir` unreadable, or a package folder that holds `manifest.toml` itself (the layout
/// before versions: it must move into a version folder).
pub fn installed(models_dir: &Path) -> Result<BTreeMap<String, Vec<String>>, String> {
    let read = |dir: &Path| -> Result<Vec<(String, PathBuf)>, String> {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("reading the model folder {}: {e}", dir.display()))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if is_folder_name(&name) && path.is_dir() {
                out.push((name, path));
            }
        }
        Ok(out)
    };
    let mut packages = BTreeMap::new();
    for (name, dir) in read(models_dir)? {
        if dir.join("manifest.toml").is_file() {
            return Err(format!(
                "{} holds manifest.toml itself: a model package lives in <models_dir>/<name>/<version>/ (move its files \
                 into {}/<its version>/)",
                dir.display(),
                dir.display()
            ));
        }
        let mut versions: Vec<String> =
            read(&dir)?.into_iter().filter(|(_, d)| d.join("manifest.toml").is_file()).map(|(v, _)| v).collect();
        if versions.is_empty() {
            continue;
        }
        versions.sort_by(|a, b| compare_versions(a, b));
        packages.insert(name, versions);
    }
    Ok(packages)
}

/// `name` or `name@version` from the configuration.
fn parse_entry(entry: &str, what: &str) -> Result<(String, Option<String>), String> {
    let entry = entry.trim();
    let (name, version) = match entry.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (entry, None),
    };
    if !is_folder_name(name) || version.is_some_and(|v| !is_folder_name(v)) {
        return Err(format!("{what} {entry:?}: a model is named NAME or NAME@VERSION, each a folder name"));
    }
    Ok((name.to_owned(), version.map(str::to_owned)))
}

/// The model versions a node runs, active ones first (in the order of `models`, or by name),
/// then the shadows, from `[worker] models` (`None`: every installed package), `[worker] shadow`
/// and the packages installed in `models_dir`.
///
/// # Errors
/// What is wrong, naming the folder: an unknown model or version, a shadow without a version,
/// a shadow that is also active, two active versions of one model, an entry listed twice, a
/// named model whose every installed version is a shadow.
pub fn plan(models_dir: &Path, models: Option<&[String]>, shadow: &[String]) -> Result<Vec<ModelRun>, String> {
    let installed = installed(models_dir)?;
    let folder = |name: &str| models_dir.join(name);
    let known = |name: &str, what: &str| -> Result<&Vec<String>, String> {
        installed.get(name).ok_or_else(|| {
            format!(
                "{what} {name}: no model package folder {} (installed: {})",
                folder(name).display(),
                list_or_none(installed.keys())
            )
        })
    };
    let check = |name: &str, version: &str, what: &str| -> Result<(), String> {
        let versions = known(name, what)?;
        if !versions.iter().any(|v| v == version) {
            return Err(format!(
                "{what} {name}@{version}: no folder {} with a manifest.toml (installed versions of {name}: {})",
                folder(name).join(version).display(),
                versions.join(", ")
            ));
        }
        Ok(())
    };
    let mut shadows: Vec<(String, String)> = Vec::new();
    for entry in shadow {
        let (name, version) = parse_entry(entry, "worker.shadow")?;
        let version = version.ok_or_else(|| {
            format!(
                "worker.shadow {name:?}: a shadow names its version (NAME@VERSION, a folder under {})",
                folder(&name).display()
            )
        })?;
        check(&name, &version, "worker.shadow")?;
        if shadows.contains(&(name.clone(), version.clone())) {
            return Err(format!("worker.shadow lists {name}@{version} twice"));
        }
        shadows.push((name, version));
    }
    let is_shadow = |name: &str, version: &str| shadows.iter().any(|(n, v)| n == name && v == version);
    // the highest installed version of `name` that is not a shadow
    let active_version =
        |name: &str| -> Option<String> { installed.get(name)?.iter().rev().find(|v| !is_shadow(name, v)).cloned() };
    let mut active: Vec<(String, String)> = Vec::new();
    match models {
        Some(entries) => {
            for entry in entries {
                let (name, version) = parse_entry(entry, "worker.models")?;
                let version = match version {
                    Some(v) => {
                        check(&name, &v, "worker.models")?;
                        v
                    }
                    None => {
                        known(&name, "worker.models")?;
                        active_version(&name).ok_or_else(|| {
                            format!(
                                "worker.models {name}: every installed version in {} is a shadow; pin the active one \
                                 (NAME@VERSION) or install another",
                                folder(&name).display()
                            )
                        })?
                    }
                };
                if let Some((_, other)) = active.iter().find(|(n, _)| *n == name) {
                    return Err(if *other == version {
                        format!("worker.models lists {name}@{version} twice")
                    } else {
                        format!(
                            "worker.models makes two versions of {name} active ({other} and {version}, folders under \
                             {}): one version of a model is active; run the other as a shadow (worker.shadow)",
                            folder(&name).display()
                        )
                    });
                }
                active.push((name, version));
            }
        }
        None => {
            // a package whose every installed version is a shadow is on trial only
            active.extend(installed.keys().filter_map(|name| active_version(name).map(|v| (name.clone(), v))));
        }
    }
    if let Some((name, version)) = active.iter().find(|(n, v)| is_shadow(n, v)) {
        return Err(format!(
            "{name}@{version} ({}) is both active (worker.models) and a shadow (worker.shadow): a version is one or \
             the other",
            folder(name).join(version).display()
        ));
    }
    let run = |(name, version): (String, String), shadow: bool| ModelRun {
        dir: models_dir.join(&name).join(&version),
        model: ModelVersion { name, version, shadow, takes: Default::default() },
        manifest: None,
    };
    Ok(active.into_iter().map(|m| run(m, false)).chain(shadows.into_iter().map(|m| run(m, true))).collect())
}

/// Reads each run's manifest into it, once, and sets its `takes` from the manifest's `[takes]`
/// (which studies it takes).
///
/// # Errors
/// A manifest that does not load, naming its package.
pub fn read_manifests(runs: &mut [ModelRun]) -> Result<(), String> {
    for run in runs.iter_mut() {
        let manifest = firstread_inference::Manifest::load(&run.dir)
            .map_err(|e| format!("model {}@{}: {e}", run.model.name, run.model.version))?;
        run.model.takes = manifest.takes.clone();
        run.manifest = Some(manifest);
    }
    Ok(())
}

/// The model version `firstread reanalyse --model ENTRY` runs: `NAME` is the active version of
/// NAME in `runs` ([`plan`]); `NAME@VERSION` that version, active or shadow (its role kept).
///
/// # Errors
/// A malformed entry, or a model or version this node does not run (naming what it runs).
pub fn reanalysis_run(runs: &[ModelRun], entry: &str) -> Result<ModelVersion, String> {
    let (name, version) = parse_entry(entry, "--model")?;
    let of_name: Vec<&ModelVersion> = runs.iter().map(|r| &r.model).filter(|m| m.name == name).collect();
    let found = match &version {
        Some(v) => of_name.iter().find(|m| m.version == *v),
        None => of_name.iter().find(|m| !m.shadow),
    };
    found.map(|m| (*m).clone()).ok_or_else(|| {
        let running: Vec<String> = of_name
            .iter()
            .map(|m| format!("{}@{}{}", m.name, m.version, if m.shadow { " (shadow)" } else { "" }))
            .collect();
        format!(
            "this node does not run {entry} ([worker] models and shadow run: {}); re-analysis queues only \
             versions its workers load",
            if running.is_empty() { "none of that model".to_owned() } else { running.join(", ") }
        )
    })
}

/// The summary `firstread reanalyse` prints: per site and in all, queued and skipped.
pub fn render_reanalysis(
    run: &ModelVersion,
    summary: &firstread_queue::reanalysis::ReanalysisSummary,
    dry_run: bool,
) -> String {
    let role = if run.shadow { " (shadow: results stored only)" } else { "" };
    let verb = if dry_run { "would queue" } else { "queued" };
    let mut out = format!(
        "re-analysis with {} {}{role}, priority {}\n",
        run.name,
        run.version,
        firstread_queue::reanalysis::REANALYSIS_PRIORITY
    );
    out.push_str(&format!("{:<24} {:>8} {:>8}\n", "SITE", "QUEUED", "SKIPPED"));
    for (site, c) in &summary.sites {
        out.push_str(&format!("{site:<24} {:>8} {:>8}\n", c.queued, c.skipped));
    }
    out.push_str(&format!(
        "{verb} {}, skipped {} (already read by {} {})\n",
        summary.queued(),
        summary.skipped(),
        run.name,
        run.version
    ));
    out
}

fn list_or_none<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = names.map(String::as_str).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// What one version read in one study version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionRead {
    /// SFR extent class (`none_or_minimal` ... `critical`), when the model gives one.
    pub extent_class: Option<String>,
    /// Involvement of both lungs (%).
    pub involvement_pct: Option<f64>,
    /// CT severity score (0-30).
    pub severity_score: Option<i32>,
}

/// One study version both versions analysed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparedStudy {
    /// The site of the study.
    pub site: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Study version.
    pub study_version: i32,
    /// Version A's read.
    pub a: VersionRead,
    /// Version B's read.
    pub b: VersionRead,
    /// The radiologist's class from the latest feedback on the study version: the class given
    /// with "disagree", the class of the read agreed with for "agree"; `None` without feedback
    /// or when "not assessable".
    pub radiologist_class: Option<String>,
}

/// Agreement counts: how many of `of` agree, and the share (%; `None` when `of` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Agreement {
    /// Studies that agree.
    pub agree: i64,
    /// Studies judged.
    pub of: i64,
    /// 100 x agree / of, rounded to 0.1 (%).
    pub pct: Option<f64>,
}

impl Agreement {
    fn of(agree: i64, of: i64) -> Self {
        Agreement { agree, of, pct: (of > 0).then(|| (1000.0 * agree as f64 / of as f64).round() / 10.0) }
    }
}

/// Two versions of one model over the study versions both analysed (status analysed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Model name.
    pub model: String,
    /// Version A.
    pub a: String,
    /// Version B.
    pub b: String,
    /// Study versions analysed by both.
    pub studies: i64,
    /// Same extent class from A and B.
    pub class_agreement: Agreement,
    /// Mean |A - B| of the involvement of both lungs (percentage points; `None` without
    /// studies).
    pub mean_abs_diff_involvement_pct: Option<f64>,
    /// Mean |A - B| of the CT severity score (points of 0-30; `None` without studies).
    pub mean_abs_diff_severity_score: Option<f64>,
    /// A's class against the radiologist's, over the studies with a class from feedback.
    pub a_agrees_with_radiologist: Agreement,
    /// B's class against the radiologist's, likewise.
    pub b_agrees_with_radiologist: Agreement,
    /// The study versions, most recent first (at most the `limit` asked for).
    pub rows: Vec<ComparedStudy>,
}

const COMPARE: &str = r#"
SELECT a.site, a.study_instance_uid, a.study_version,
       a.extent_class, (a.result->'findings'->'total'->>'involvement_pct')::float8, a.severity_score,
       b.extent_class, (b.result->'findings'->'total'->>'involvement_pct')::float8, b.severity_score,
       CASE f.verdict WHEN 'disagree' THEN f.extent_class WHEN 'agree' THEN r.extent_class END
FROM jobs a
JOIN jobs b ON b.kind = 'analysis' AND b.site = a.site AND b.study_instance_uid = a.study_instance_uid
    AND b.study_version = a.study_version AND b.model = a.model AND b.model_version = $3
    AND b.state = 'done' AND b.result_status = 'analysed'
LEFT JOIN LATERAL (
    SELECT f.verdict, f.extent_class, f.model_version FROM feedback f
    WHERE f.site = a.site AND f.study_instance_uid = a.study_instance_uid AND f.study_version = a.study_version
      AND f.model = a.model
    ORDER BY f.id DESC LIMIT 1
) f ON true
LEFT JOIN jobs r ON f.verdict = 'agree' AND r.kind = 'analysis' AND r.site = a.site
    AND r.study_instance_uid = a.study_instance_uid AND r.study_version = a.study_version AND r.model = a.model
    AND r.model_version = f.model_version AND r.destination = ''
WHERE a.kind = 'analysis' AND a.model = $1 AND a.model_version = $2 AND a.state = 'done'
  AND a.result_status = 'analysed' AND ($4::text[] IS NULL OR a.site = ANY($4))
ORDER BY greatest(a.finished_at, b.finished_at) DESC, a.site, a.study_instance_uid, a.study_version DESC
"#;

/// Compares versions `a` and `b` of `model` over the study versions of `scope`'s sites that
/// both analysed (jobs done with status analysed, active or shadow alone): extent-class
/// agreement, mean absolute differences of involvement and severity score, and each version's
/// agreement with the radiologist's class where feedback gives one. `rows` keeps the `limit`
/// most recent study versions; the figures cover all of them.
///
/// # Errors
/// Database errors.
pub async fn compare(
    pool: &PgPool,
    model: &str,
    a: &str,
    b: &str,
    scope: &firstread_sites::Scope,
    limit: usize,
) -> Result<Comparison, sqlx::Error> {
    let rows = sqlx::query(COMPARE).bind(model).bind(a).bind(b).bind(scope.filter()).fetch_all(pool).await?;
    let mut studies = Vec::with_capacity(rows.len());
    for r in &rows {
        studies.push(ComparedStudy {
            site: r.try_get(0)?,
            study_instance_uid: r.try_get(1)?,
            study_version: r.try_get(2)?,
            a: VersionRead {
                extent_class: r.try_get(3)?,
                involvement_pct: r.try_get(4)?,
                severity_score: r.try_get(5)?,
            },
            b: VersionRead {
                extent_class: r.try_get(6)?,
                involvement_pct: r.try_get(7)?,
                severity_score: r.try_get(8)?,
            },
            radiologist_class: r.try_get(9)?,
        });
    }
    Ok(summarise(model, a, b, studies, limit))
}

/// The figures of [`Comparison`] over `studies`.
fn summarise(model: &str, a: &str, b: &str, mut studies: Vec<ComparedStudy>, limit: usize) -> Comparison {
    let n = studies.len() as i64;
    let same_class = studies.iter().filter(|s| s.a.extent_class == s.b.extent_class).count() as i64;
    let mean_abs = |get: &dyn Fn(&VersionRead) -> Option<f64>| {
        let diffs: Vec<f64> = studies.iter().filter_map(|s| Some((get(&s.a)? - get(&s.b)?).abs())).collect();
        (!diffs.is_empty()).then(|| diffs.iter().sum::<f64>() / diffs.len() as f64)
    };
    let involvement = mean_abs(&|r| r.involvement_pct);
    let score = mean_abs(&|r| r.severity_score.map(f64::from));
    let judged: Vec<&ComparedStudy> = studies.iter().filter(|s| s.radiologist_class.is_some()).collect();
    let agrees = |pick: &dyn Fn(&ComparedStudy) -> &VersionRead| {
        let agree = judged
            .iter()
            .filter(|s| {
                let s: &ComparedStudy = s;
                pick(s).extent_class == s.radiologist_class
            })
            .count() as i64;
        Agreement::of(agree, judged.len() as i64)
    };
    let (a_rad, b_rad) = (agrees(&|s| &s.a), agrees(&|s| &s.b));
    studies.truncate(limit);
    Comparison {
        model: model.to_owned(),
        a: a.to_owned(),
        b: b.to_owned(),
        studies: n,
        class_agreement: Agreement::of(same_class, n),
        mean_abs_diff_involvement_pct: involvement,
        mean_abs_diff_severity_score: score,
        a_agrees_with_radiologist: a_rad,
        b_agrees_with_radiologist: b_rad,
        rows: studies,
    }
}

impl Comparison {
    /// The comparison as an aligned text table: one line per study version, then the figures.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let (a, b) = (&self.a, &self.b);
        let text = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
        let num = |x: Option<f64>| x.map_or_else(|| "-".into(), |x| format!("{x:.1}"));
        let int = |x: Option<i32>| x.map_or_else(|| "-".into(), |x| x.to_string());
        let header = [
            "SITE".to_owned(),
            "STUDY".into(),
            "VER".into(),
            format!("CLASS {a}"),
            format!("CLASS {b}"),
            format!("INVOLVEMENT % {a}"),
            format!("INVOLVEMENT % {b}"),
            format!("SCORE {a}"),
            format!("SCORE {b}"),
            "RADIOLOGIST".into(),
        ];
        let mut lines: Vec<[String; 10]> = vec![header];
        for s in &self.rows {
            lines.push([
                s.site.clone(),
                s.study_instance_uid.clone(),
                s.study_version.to_string(),
                text(&s.a.extent_class),
                text(&s.b.extent_class),
                num(s.a.involvement_pct),
                num(s.b.involvement_pct),
                int(s.a.severity_score),
                int(s.b.severity_score),
                text(&s.radiologist_class),
            ]);
        }
        let mut widths = [0usize; 10];
        for line in &lines {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let _ = writeln!(out, "{}: {a} (A) against {b} (B), study versions analysed by both", self.model);
        for line in &lines {
            let cells: Vec<String> = line.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        }
        if (self.rows.len() as i64) < self.studies {
            let _ = writeln!(out, "(the {} most recent of {})", self.rows.len(), self.studies);
        }
        let pct = |g: &Agreement| g.pct.map_or_else(|| "-".into(), |p| format!("{p:.1} %"));
        let figures = [
            ("studies".to_owned(), self.studies.to_string()),
            (
                "extent class agreement".into(),
                format!(
                    "{} of {} ({})",
                    self.class_agreement.agree,
                    self.class_agreement.of,
                    pct(&self.class_agreement)
                ),
            ),
            (
                "mean |A - B| involvement".into(),
                self.mean_abs_diff_involvement_pct.map_or_else(|| "-".into(), |x| format!("{x:.2} percentage points")),
            ),
            (
                "mean |A - B| severity score".into(),
                self.mean_abs_diff_severity_score.map_or_else(|| "-".into(), |x| format!("{x:.2}")),
            ),
        ];
        let radiologist = [(a, &self.a_agrees_with_radiologist), (b, &self.b_agrees_with_radiologist)].map(|(v, g)| {
            (format!("{v} = radiologist's class"), format!("{} of {} with feedback ({})", g.agree, g.of, pct(g)))
        });
        let width = figures.iter().chain(&radiologist).map(|(k, _)| k.chars().count()).max().unwrap_or(0);
        out.push('\n');
        for (k, v) in figures.iter().chain(&radiologist) {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A models folder with `packages` (name, version) holding an empty manifest.toml.
    fn folder(packages: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, version) in packages {
            let d = dir.path().join(name).join(version);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("manifest.toml"), "").expect("manifest");
        }
        dir
    }

    fn runs(plan: &[ModelRun]) -> Vec<String> {
        plan.iter()
            .map(|r| format!("{}@{}{}", r.model.name, r.model.version, if r.model.shadow { " shadow" } else { "" }))
            .collect()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn reanalysis_runs_the_active_or_a_named_version_this_node_runs() {
        let dir = folder(&[("covid19-lung-ct", "0.1.0"), ("covid19-lung-ct", "0.2.1"), ("emphysema-ct", "0.1.0")]);
        let plan = plan(dir.path(), None, &strings(&["covid19-lung-ct@0.1.0"])).expect("plan");
        let active = reanalysis_run(&plan, "covid19-lung-ct").expect("active");
        assert_eq!((active.version.as_str(), active.shadow), ("0.2.1", false));
        let shadow = reanalysis_run(&plan, "covid19-lung-ct@0.1.0").expect("shadow");
        assert_eq!((shadow.version.as_str(), shadow.shadow), ("0.1.0", true));
        let unknown = reanalysis_run(&plan, "covid19-lung-ct@0.0.9").expect_err("not run");
        assert!(unknown.contains("covid19-lung-ct@0.2.1, covid19-lung-ct@0.1.0 (shadow)"), "{unknown}");
        assert!(reanalysis_run(&plan, "../x").is_err());
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("0.10.0", "0.9.0"), Ordering::Greater);
        assert_eq!(compare_versions("0.2.1", "0.2.0"), Ordering::Greater);
        assert_eq!(compare_versions("1.0.0", "0.99.99"), Ordering::Greater);
        assert_eq!(compare_versions("0.2.1", "0.2.1"), Ordering::Equal);
        assert_eq!(compare_versions("0.2", "0.2.0"), Ordering::Less);
        assert_eq!(compare_versions("1.0.0-rc1", "1.0.0-rc2"), Ordering::Less);
    }

    #[test]
    fn default_discovery_takes_every_package_at_its_highest_version() {
        let dir = folder(&[("lungs", "0.9.0"), ("lungs", "0.10.0"), ("lungs", "0.2.1"), ("emphysema", "0.1.0")]);
        // a folder without a version holding a manifest is no package
        std::fs::create_dir_all(dir.path().join("notes/drafts")).expect("mkdir");
        let plan = plan(dir.path(), None, &[]).expect("plan");
        assert_eq!(runs(&plan), ["emphysema@0.1.0", "lungs@0.10.0"], "0.10.0 > 0.9.0, numerically");
        assert_eq!(plan[1].dir, dir.path().join("lungs/0.10.0"));
    }

    #[test]
    fn a_name_is_its_highest_version_that_is_not_a_shadow() {
        let dir = folder(&[("covid19-lung-ct", "0.1.0"), ("covid19-lung-ct", "0.2.1"), ("covid19-lung-ct", "0.3.0")]);
        let models = strings(&["covid19-lung-ct"]);
        assert_eq!(runs(&plan(dir.path(), Some(&models), &[]).expect("plan")), ["covid19-lung-ct@0.3.0"]);
        // 0.3.0 installed as a shadow: 0.2.1 stays active without a pin, with or without `models`
        let shadow = strings(&["covid19-lung-ct@0.3.0", "covid19-lung-ct@0.1.0"]);
        let expected = ["covid19-lung-ct@0.2.1", "covid19-lung-ct@0.3.0 shadow", "covid19-lung-ct@0.1.0 shadow"];
        assert_eq!(runs(&plan(dir.path(), Some(&models), &shadow).expect("plan")), expected);
        assert_eq!(runs(&plan(dir.path(), None, &shadow).expect("plan")), expected);
        // a pin
        let pinned = strings(&["covid19-lung-ct@0.1.0"]);
        assert_eq!(runs(&plan(dir.path(), Some(&pinned), &[]).expect("plan")), ["covid19-lung-ct@0.1.0"]);
        // a model on trial only: every version a shadow, nothing active
        let trial = folder(&[("emphysema-ct", "0.1.0")]);
        let shadow = strings(&["emphysema-ct@0.1.0"]);
        assert_eq!(runs(&plan(trial.path(), None, &shadow).expect("plan")), ["emphysema-ct@0.1.0 shadow"]);
        let named = strings(&["emphysema-ct"]);
        assert!(plan(trial.path(), Some(&named), &shadow).is_err_and(|e| e.contains("every installed version")));
    }

    #[test]
    fn what_cannot_run_is_refused_naming_the_folder() {
        let dir = folder(&[("covid19-lung-ct", "0.1.0"), ("covid19-lung-ct", "0.2.1")]);
        let root = dir.path().display().to_string();
        let err = |models: Option<&[&str]>, shadow: &[&str]| {
            let models = models.map(strings);
            plan(dir.path(), models.as_deref(), &strings(shadow)).expect_err("refused")
        };
        // a shadow that is also active
        let e = err(Some(&["covid19-lung-ct@0.2.1"]), &["covid19-lung-ct@0.2.1"]);
        assert!(e.contains("both active") && e.contains(&format!("{root}/covid19-lung-ct/0.2.1")), "{e}");
        // unknown version, active or shadow
        let e = err(Some(&["covid19-lung-ct@0.3.0"]), &[]);
        assert!(e.contains(&format!("{root}/covid19-lung-ct/0.3.0")) && e.contains("0.1.0, 0.2.1"), "{e}");
        let e = err(None, &["covid19-lung-ct@9.9.9"]);
        assert!(e.contains(&format!("{root}/covid19-lung-ct/9.9.9")), "{e}");
        // unknown model
        let e = err(Some(&["emphysema-ct"]), &[]);
        assert!(e.contains(&format!("{root}/emphysema-ct")) && e.contains("installed: covid19-lung-ct"), "{e}");
        // two active versions of one model
        let e = err(Some(&["covid19-lung-ct@0.1.0", "covid19-lung-ct@0.2.1"]), &[]);
        assert!(e.contains("two versions of covid19-lung-ct active (0.1.0 and 0.2.1"), "{e}");
        let e = err(Some(&["covid19-lung-ct", "covid19-lung-ct@0.1.0"]), &[]);
        assert!(e.contains("two versions"), "{e}");
        // a shadow without its version, names that are no folder
        assert!(err(None, &["covid19-lung-ct"]).contains("NAME@VERSION"));
        assert!(err(Some(&["../etc"]), &[]).contains("folder name"));
        assert!(err(None, &["covid19-lung-ct@.."]).contains("folder name"));
        // listed twice
        assert!(err(None, &["covid19-lung-ct@0.1.0", "covid19-lung-ct@0.1.0"]).contains("twice"));
        // the layout before versions
        let old = tempfile::tempdir().expect("dir");
        std::fs::create_dir_all(old.path().join("covid19-lung-ct")).expect("mkdir");
        std::fs::write(old.path().join("covid19-lung-ct/manifest.toml"), "").expect("manifest");
        let e = plan(old.path(), None, &[]).expect_err("old layout");
        assert!(e.contains("covid19-lung-ct holds manifest.toml itself"), "{e}");
        // no models folder
        assert!(plan(&dir.path().join("nowhere"), None, &[]).is_err_and(|e| e.contains("nowhere")));
    }

    #[test]
    fn the_shipped_packages_plan_as_documented() {
        let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let plan = plan(&models, None, &strings(&["covid19-lung-ct@0.1.0"])).expect("plan");
        let covid: Vec<String> = runs(&plan).into_iter().filter(|r| r.starts_with("covid19-lung-ct@")).collect();
        assert_eq!(covid, ["covid19-lung-ct@0.2.4", "covid19-lung-ct@0.1.0 shadow"]);
    }

    fn read(class: &str, involvement: f64, score: i32) -> VersionRead {
        VersionRead {
            extent_class: Some(class.into()),
            involvement_pct: Some(involvement),
            severity_score: Some(score),
        }
    }

    #[test]
    fn figures_over_the_studies() {
        let study = |uid: &str, a: VersionRead, b: VersionRead, radiologist: Option<&str>| ComparedStudy {
            site: "default".into(),
            study_instance_uid: uid.into(),
            study_version: 1,
            a,
            b,
            radiologist_class: radiologist.map(str::to_owned),
        };
        let studies = vec![
            study("1", read("moderate", 12.0, 9), read("moderate", 10.0, 8), Some("moderate")),
            study("2", read("extensive", 30.0, 14), read("moderate", 24.0, 11), Some("extensive")),
            study("3", read("none_or_minimal", 1.0, 3), read("none_or_minimal", 1.5, 3), None),
            study("4", read("severe", 60.0, 20), read("severe", 58.5, 20), Some("critical")),
        ];
        let c = summarise("m", "0.2.1", "0.1.0", studies, 2);
        assert_eq!(c.studies, 4);
        assert_eq!(c.class_agreement, Agreement { agree: 3, of: 4, pct: Some(75.0) });
        // |2| + |6| + |0.5| + |1.5| = 10 over 4
        assert_eq!(c.mean_abs_diff_involvement_pct, Some(2.5));
        // 1 + 3 + 0 + 0 over 4
        assert_eq!(c.mean_abs_diff_severity_score, Some(1.0));
        assert_eq!(c.a_agrees_with_radiologist, Agreement { agree: 2, of: 3, pct: Some(66.7) });
        assert_eq!(c.b_agrees_with_radiologist, Agreement { agree: 1, of: 3, pct: Some(33.3) });
        assert_eq!(c.rows.len(), 2, "rows cut to the limit, figures over all");
        let table = c.render();
        let line = table.lines().find(|l| l.starts_with("extent class agreement")).expect("agreement line");
        assert!(line.ends_with("  3 of 4 (75.0 %)"), "{table}");
        assert!(table.contains("(the 2 most recent of 4)"), "{table}");
        let empty = summarise("m", "a", "b", Vec::new(), 10);
        assert_eq!((empty.class_agreement.pct, empty.mean_abs_diff_severity_score), (None, None));
    }
}
