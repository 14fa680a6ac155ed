//! The key image of a study version as a small PNG for the worklist: the first Secondary
//! Capture of its result set (RGB, 8 bits, uncompressed, as `firstread-report` writes it),
//! box-averaged down to at most [`MAX_WIDTH`] pixels wide.

use std::path::Path;

use dicom_dictionary_std::tags;
use sqlx::PgPool;

/// Widest thumbnail (pixels).
pub const MAX_WIDTH: usize = 192;

/// Why there is no thumbnail.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// No key image for that study version (404).
    #[error("no key image")]
    NotFound,
    /// The file is not the RGB image expected (500).
    #[error("key image: {0}")]
    Invalid(String),
    /// The database failed (500).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The PNG of the key image of (`study`, `version`) in one of `scope`'s sites.
///
/// # Errors
/// [`ThumbnailError`] (not found for another site's study).
pub async fn key_image_png(
    pool: &PgPool,
    root: &Path,
    study: &str,
    version: i32,
    scope: &firstread_sites::Scope,
) -> Result<Vec<u8>, ThumbnailError> {
    let files: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT result->'result_files' FROM jobs WHERE kind = 'analysis' AND study_instance_uid = $1 \
         AND study_version = $2 AND state = 'done' AND NOT shadow AND ($3::text[] IS NULL OR site = ANY($3)) \
         ORDER BY extent_class IS NULL, id LIMIT 1",
    )
    .bind(study)
    .bind(version)
    .bind(scope.filter())
    .fetch_optional(pool)
    .await?
    .flatten();
    let rel = files
        .as_ref()
        .and_then(|f| f.as_array())
        .and_then(|a| a.iter().filter_map(|v| v.as_str()).find(|p| p.ends_with("-sc.dcm")))
        .ok_or(ThumbnailError::NotFound)?
        .to_owned();
    // result paths are written by the node under results/ (never from peer input)
    if rel.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(ThumbnailError::Invalid(format!("unexpected path {rel}")));
    }
    let path = root.join(&rel);
    tokio::task::spawn_blocking(move || render(&path)).await.map_err(|e| ThumbnailError::Invalid(e.to_string()))?
}

fn render(path: &Path) -> Result<Vec<u8>, ThumbnailError> {
    let invalid = |m: String| ThumbnailError::Invalid(m);
    let obj = dicom_object::open_file(path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    let int = |tag| -> Result<usize, ThumbnailError> {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_int::<u32>().ok())
            .map(|v| v as usize)
            .ok_or_else(|| invalid(format!("missing {tag}")))
    };
    let (rows, cols, samples) = (int(tags::ROWS)?, int(tags::COLUMNS)?, int(tags::SAMPLES_PER_PIXEL)?);
    if samples != 3 || int(tags::BITS_ALLOCATED)? != 8 {
        return Err(invalid("not 8-bit RGB".into()));
    }
    let planar = obj.element(tags::PLANAR_CONFIGURATION).ok().and_then(|e| e.to_int::<u16>().ok()).unwrap_or(0);
    let pixels = obj
        .element(tags::PIXEL_DATA)
        .map_err(|e| invalid(e.to_string()))?
        .to_bytes()
        .map_err(|e| invalid(e.to_string()))?;
    if pixels.len() < rows * cols * 3 {
        return Err(invalid("pixel data shorter than rows x columns x 3".into()));
    }
    let factor = cols.div_ceil(MAX_WIDTH).max(1);
    let (h, w) = (rows / factor, cols / factor);
    let at = |r: usize, c: usize, ch: usize| -> u32 {
        let i = if planar == 1 { ch * rows * cols + r * cols + c } else { (r * cols + c) * 3 + ch };
        u32::from(pixels[i])
    };
    let mut out = vec![0u8; h * w * 3];
    for y in 0..h {
        for x in 0..w {
            for ch in 0..3 {
                let mut sum = 0;
                for dy in 0..factor {
                    for dx in 0..factor {
                        sum += at(y * factor + dy, x * factor + dx, ch);
                    }
                }
                out[(y * w + x) * 3 + ch] = (sum / (factor * factor) as u32) as u8;
            }
        }
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| invalid(e.to_string()))?;
        writer.write_image_data(&out).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(png_bytes)
}
