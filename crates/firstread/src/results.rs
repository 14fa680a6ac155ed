//! Writing a first read's result objects (SR, volumetric SR, SEG, Secondary Captures) under the
//! storage root: `[sites/<site>/]results/<study>/v<study version>/<model>/<model version>/`
//! ([`result_dir`]), each
//! file written to a temporary name, fsync'd and renamed, so an export job never reads a partial
//! file. The objects are deterministic (UIDs and dates derived from the job and the model
//! version), so a rerun overwrites them with the same bytes, and a study version analysed by one
//! model version keeps its files when another model version analyses it or a later study version.
//! A shadow job's objects say so in their Series Description ([`SHADOW_MARK`]).

use std::io::Write;
use std::path::Path;

use firstread_inference::Manifest;
use firstread_queue::Job;
use firstread_report::{sc, seg, sr, ResultInput, ResultUids, SourceStudy};
use firstread_store::attributes::{describe, AttributeError};
use firstread_store::InstanceAttributes;

use crate::analysis::Analysed;

/// What starts the Series Description (0008,103E) of a shadow model version's result objects,
/// so a viewer's series list tells them from the active read.
pub const SHADOW_MARK: &str = "SHADOW ";

/// Marks a result object as a shadow's: [`SHADOW_MARK`] before its Series Description, the
/// whole cut to the 64 characters of LO.
fn mark_shadow(obj: &mut dicom_object::FileDicomObject<dicom_object::InMemDicomObject>) {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let description = obj
        .element(tags::SERIES_DESCRIPTION)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches([' ', '\0']).to_owned())
        .unwrap_or_default();
    let marked: String = format!("{SHADOW_MARK}{description}").chars().take(64).collect();
    obj.put(DataElement::new(tags::SERIES_DESCRIPTION, VR::LO, PrimitiveValue::from(marked)));
}

/// A result object on disk.
#[derive(Debug, Clone)]
pub struct Written {
    /// Path relative to the storage root.
    pub path: String,
    /// Its index attributes and DICOM JSON, taken from the object before it was written (so
    /// indexing it does not read the file back).
    pub attributes: InstanceAttributes,
    /// File size, bytes.
    pub size_bytes: u64,
}

/// Builds and writes the result objects (a shadow job's marked, [`SHADOW_MARK`]); returns them,
/// SR first. The SR is built and written first, alone, and handed to `sr_written` before the
/// other objects (volumetric SR, SEG, key images) are built, so the caller can index and export
/// the read while they are.
///
/// # Errors
/// A message when an object cannot be built or written.
pub fn write(
    root: &Path,
    job: &Job,
    manifest: &Manifest,
    analysed: &Analysed,
    predecessor_sr: Option<(String, String, String)>,
    sr_written: impl FnOnce(&Written),
) -> Result<Vec<Written>, String> {
    let volume = &analysed.study.volume;
    let first = volume.slices.first().ok_or("the volume has no slices")?;
    let source = SourceStudy::read(&first.path).map_err(|e| e.to_string())?;
    let uids = ResultUids::derive(&study_key(job), &manifest.name, &manifest.version, job.study_version);
    let created = job.created_at;
    let input = ResultInput {
        volume,
        segmentation: &analysed.segmentation,
        findings: analysed.findings.as_ref(),
        measures: &analysed.measures,
        manifest,
        source: &source,
        uids: &uids,
        study_version: job.study_version,
        predecessor_sr,
        content_date: created.format("%Y%m%d").to_string(),
        content_time: created.format("%H%M%S").to_string(),
    };
    let dir_rel = result_dir(&job.site, &job.study_instance_uid, job.study_version, &manifest.name, &manifest.version)?;
    let dir = root.join(&dir_rel);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let place = Place { dir: &dir, dir_rel: &dir_rel, shadow: job.shadow };
    let sr = place.write(0, "sr", sr::build_sr(&input).map_err(|e| e.to_string())?)?;
    sr_written(&sr);
    // the other builders are independent: built side by side (the SEG and the key images
    // dominate for large volumes)
    let (volumetric, seg, key_images) = std::thread::scope(|scope| {
        let volumetric = scope.spawn(|| sr::build_volumetric_sr(&input));
        let seg = scope.spawn(|| seg::build_seg(&input));
        let key_images = sc::build_key_images(&input);
        Ok::<_, String>((joined(volumetric)?, joined(seg)?, key_images))
    })?;
    let mut objects =
        vec![("sr-volumetric", volumetric.map_err(|e| e.to_string())?), ("seg", seg.map_err(|e| e.to_string())?)];
    for image in key_images.map_err(|e| e.to_string())? {
        objects.push(("sc", image));
    }
    if job.shadow {
        for (_, obj) in &mut objects {
            mark_shadow(obj);
        }
    }
    let mut written = vec![sr];
    // index attributes and DICOM JSON of every object, side by side
    let described = std::thread::scope(|scope| {
        let handles: Vec<_> = objects.iter().map(|(_, obj)| scope.spawn(move || describe(obj))).collect();
        handles.into_iter().map(joined).collect::<Result<Vec<_>, String>>()
    })?;
    for (n, ((kind, obj), attributes)) in objects.iter().zip(described).enumerate() {
        written.push(place.put(n + 1, kind, obj, attributes)?);
    }
    Ok(written)
}

/// Where a result set's files go.
struct Place<'a> {
    dir: &'a Path,
    dir_rel: &'a str,
    shadow: bool,
}

type Object = dicom_object::FileDicomObject<dicom_object::InMemDicomObject>;

impl Place<'_> {
    /// Marks (a shadow's), describes and writes object number `n`.
    fn write(&self, n: usize, kind: &str, mut obj: Object) -> Result<Written, String> {
        if self.shadow {
            mark_shadow(&mut obj);
        }
        let attributes = describe(&obj);
        self.put(n, kind, &obj, attributes)
    }

    /// Writes object number `n` as `<n>-<kind>.dcm`: to a temporary name, fsync'd, renamed.
    fn put(
        &self,
        n: usize,
        kind: &str,
        obj: &Object,
        attributes: Result<InstanceAttributes, AttributeError>,
    ) -> Result<Written, String> {
        let name = format!("{n:02}-{kind}.dcm");
        let attributes = attributes.map_err(|e| format!("describing {name}: {e}"))?;
        let mut bytes = Vec::new();
        obj.write_all(&mut bytes).map_err(|e| format!("encoding {name}: {e}"))?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(&name))
        })();
        result.map_err(|e| format!("writing {name}: {e}"))?;
        let size_bytes = bytes.len() as u64;
        Ok(Written { path: format!("{}/{name}", self.dir_rel), attributes, size_bytes })
    }
}

/// What result UIDs are derived from for a job's study: its Study Instance UID, with the site
/// in front for sites other than the default (`<site>/<uid>`). The same study sent by two sites
/// gets two result sets with different UIDs; the default site's UIDs are those of before sites
/// existed.
pub fn study_key(job: &Job) -> String {
    if job.site == firstread_sites::DEFAULT {
        job.study_instance_uid.clone()
    } else {
        format!("{}/{}", job.site, job.study_instance_uid)
    }
}

/// The folder of a result set, relative to the storage root:
/// `[sites/<site>/]results/<study>/v<study version>/<model>/<model version>`
/// ([`firstread_sites::folder`]).
///
/// # Errors
/// A site, model name or version that is not a plain folder name (empty, `.`, `..`, or holding
/// a path separator). The Study Instance UID is a validated UID (the index refuses others).
pub fn result_dir(
    site: &str,
    study: &str,
    study_version: i32,
    model: &str,
    model_version: &str,
) -> Result<String, String> {
    if !firstread_sites::is_valid(site) {
        return Err(format!("the site {site:?} is not a folder name"));
    }
    for (what, part) in [("study", study), ("model name", model), ("model version", model_version)] {
        if part.is_empty() || part == "." || part == ".." || part.contains(['/', '\\', '\0']) {
            return Err(format!("the {what} {part:?} is not a folder name"));
        }
    }
    Ok(format!("{}results/{study}/v{study_version}/{model}/{model_version}", firstread_sites::folder(site)))
}

/// The value of a scoped builder thread; a panic becomes an error message.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> Result<T, String> {
    handle.join().map_err(|_| "a report builder panicked".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shadow_says_so_first_within_64_characters() {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        use dicom_dictionary_std::tags;
        let mut obj = dicom_object::FileDicomObject::new_empty_with_meta(
            dicom_object::FileMetaTableBuilder::new()
                .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.88.34")
                .media_storage_sop_instance_uid("2.25.1")
                .transfer_syntax("1.2.840.10008.1.2.1")
                .build()
                .expect("meta"),
        );
        let description = |obj: &dicom_object::FileDicomObject<dicom_object::InMemDicomObject>| {
            obj.element(tags::SERIES_DESCRIPTION).expect("description").to_str().expect("text").into_owned()
        };
        obj.put(DataElement::new(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            PrimitiveValue::from("firstread first read (covid19-lung-ct 0.1.0)"),
        ));
        mark_shadow(&mut obj);
        assert_eq!(description(&obj), "SHADOW firstread first read (covid19-lung-ct 0.1.0)");
        obj.put(DataElement::new(tags::SERIES_DESCRIPTION, VR::LO, PrimitiveValue::from("x".repeat(64))));
        mark_shadow(&mut obj);
        assert_eq!(description(&obj), format!("SHADOW {}", "x".repeat(57)));
    }

    #[test]
    fn one_folder_per_study_version_model_and_model_version() {
        let a = result_dir("default", "1.2.3", 1, "covid19-lung-ct", "0.1.0").unwrap();
        assert_eq!(a, "results/1.2.3/v1/covid19-lung-ct/0.1.0");
        let b = result_dir("default", "1.2.3", 2, "covid19-lung-ct", "0.2.0").unwrap();
        assert_eq!(b, "results/1.2.3/v2/covid19-lung-ct/0.2.0");
        assert_ne!(result_dir("default", "1.2.3", 1, "covid19-lung-ct", "0.2.0").unwrap(), a);
        for bad in ["", ".", "..", "0.1/../x", "a\\b"] {
            assert!(result_dir("default", "1.2.3", 1, "m", bad).is_err(), "{bad:?}");
        }
        // another site: its own folder; never a path out of it
        let other = result_dir("st-anne", "1.2.3", 1, "covid19-lung-ct", "0.1.0").unwrap();
        assert_eq!(other, "sites/st-anne/results/1.2.3/v1/covid19-lung-ct/0.1.0");
        assert!(result_dir("../x", "1.2.3", 1, "m", "1").is_err());
    }
}
