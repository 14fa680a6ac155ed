//! Sites: the hospitals one node serves.
//!
//! Every study belongs to the site of the peer (`[[peers]] site`) or the user (STOW-RS) that
//! sent it, and a caller sees the studies of its own sites only: another site's study is not
//! found (404), never forbidden, so its existence does not leak. Study, series and SOP
//! Instance UIDs are global, but the same study sent by two sites is two records, one per site
//! (`schemas/0008_sites.sql`: every key of the index and the queue starts with the site).
//!
//! A node that serves one hospital needs no configuration: everything is in [`DEFAULT`].

use serde::{Deserialize, Serialize};

/// The site of peers and users for which none is configured, and of everything indexed before
/// sites existed.
pub const DEFAULT: &str = "default";

/// In a user's site list: every site (node operators).
pub const EVERY: &str = "*";

/// Longest site name (bytes).
pub const MAX_NAME_LEN: usize = 64;

/// Whether `name` can name a site: 1 to [`MAX_NAME_LEN`] lower-case ASCII letters, digits, `.`,
/// `_` or `-`, not starting with `.` (it becomes a folder name under the storage root; lower case
/// only, so that two sites never share a folder on a case-insensitive file system).
pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

/// What [`is_valid`] asks, for messages.
pub const NAME_RULE: &str = "1-64 of a-z 0-9 . _ - (lower case, not starting with .)";

/// The folder under the storage root (and under `results/`) that holds a site's files:
/// `""` for [`DEFAULT`] (the layout of before sites existed), `"sites/<site>/"` otherwise.
pub fn folder(site: &str) -> String {
    if site == DEFAULT {
        String::new()
    } else {
        format!("sites/{site}/")
    }
}

/// The sites a caller sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every site: node operators, the deprecated shared token, a node without authentication.
    Every,
    /// These sites (none: nothing).
    Only(Vec<String>),
}

impl Scope {
    /// The scope of a user's site list: [`Scope::Every`] when it holds [`EVERY`].
    pub fn of_names(names: &[String]) -> Self {
        if names.iter().any(|n| n == EVERY) {
            Scope::Every
        } else {
            Scope::Only(names.to_vec())
        }
    }

    /// Whether the caller sees `site`.
    pub fn sees(&self, site: &str) -> bool {
        match self {
            Scope::Every => true,
            Scope::Only(sites) => sites.iter().any(|s| s == site),
        }
    }

    /// For SQL: `None` for every site, else the list (bind as `$n::text[]` and match with
    /// `($n::text[] IS NULL OR site = ANY($n))`).
    pub fn filter(&self) -> Option<Vec<String>> {
        match self {
            Scope::Every => None,
            Scope::Only(sites) => Some(sites.clone()),
        }
    }

    /// The site a caller's uploads (STOW-RS) go to: `requested` when given and seen, else
    /// its only site; [`DEFAULT`] for [`Scope::Every`] without a request.
    ///
    /// # Errors
    /// A message for the client when `requested` is not one of its sites, or when it has
    /// several (or none) and named none.
    pub fn upload_site(&self, requested: Option<&str>) -> Result<String, String> {
        match (requested, self) {
            (Some(r), _) if self.sees(r) && is_valid(r) => Ok(r.to_owned()),
            (Some(_), _) => Err("site: not one of the caller's sites".into()),
            (None, Scope::Every) => Ok(DEFAULT.to_owned()),
            (None, Scope::Only(sites)) if sites.len() == 1 => Ok(sites[0].clone()),
            (None, Scope::Only(sites)) if sites.is_empty() => Err("the caller has no site".into()),
            (None, Scope::Only(_)) => Err("the caller has several sites: name one with ?site=".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["default", "st-anne", "chu_lyon.2", &"a".repeat(64)] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", ".hidden", "..", "a/b", "a b", "é", "*", "StAnne", &"a".repeat(65)] {
            assert!(!is_valid(bad), "{bad}");
        }
        assert_eq!(folder(DEFAULT), "");
        assert_eq!(folder("st-anne"), "sites/st-anne/");
    }

    #[test]
    fn scopes() {
        let every = Scope::of_names(&["a".into(), EVERY.into()]);
        assert_eq!(every, Scope::Every);
        assert!(every.sees("anything") && every.filter().is_none());
        let two = Scope::of_names(&["a".into(), "b".into()]);
        assert!(two.sees("a") && !two.sees("c"));
        assert_eq!(two.filter(), Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(Scope::Only(vec![]).filter(), Some(vec![]), "no site sees nothing, not everything");

        assert_eq!(Scope::of_names(&["a".into()]).upload_site(None), Ok("a".into()));
        assert!(two.upload_site(None).is_err());
        assert_eq!(two.upload_site(Some("b")), Ok("b".into()));
        assert!(two.upload_site(Some("c")).is_err());
        assert_eq!(every.upload_site(None), Ok(DEFAULT.into()));
        assert!(every.upload_site(Some("../x")).is_err());
        assert!(Scope::Only(vec![]).upload_site(None).is_err());
    }
}
