//! Users of firstread's HTTP side: named people (radiologists, admins) and machine clients
//! (service), each with a role; passwords hashed with argon2id (RFC 9106, the `argon2` crate's
//! defaults), API tokens for machines and browser sessions for people, in PostgreSQL
//! (`schemas/0006_users.sql`).
//!
//! Tokens and session ids are 256 random bits (`fr_` + base64url for tokens), shown once and
//! stored as SHA-256. Every request looks its credential up, so disabling a user ends their
//! tokens and sessions at once.

use std::fmt;
use std::str::FromStr;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads studies and first reads, gives feedback ([`Permission`]).
    Radiologist,
    /// Everything: feedback and monitoring (configuration is `firstread user` and the
    /// configuration file, on the host).
    Admin,
    /// A machine client (a RIS, a PACS, a monitoring system, a script): API tokens, no password;
    /// reads studies and `/metrics`, gives no feedback.
    Service,
}

impl Role {
    /// Its name in the database and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Radiologist => "radiologist",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

/// What a role may do on HTTP beyond reading its sites' studies (QIDO-RS, WADO-RS, the viewer,
/// the triage worklist and key images) and storing into them (STOW-RS), which every role may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Give feedback on a first read: a reader's statement (radiologist, admin).
    Feedback,
    /// Read `/metrics`: monitoring (admin, service).
    Metrics,
}

impl Role {
    /// Whether this role may do `what`.
    pub fn may(self, what: Permission) -> bool {
        matches!(
            (self, what),
            (Role::Radiologist | Role::Admin, Permission::Feedback)
                | (Role::Admin | Role::Service, Permission::Metrics)
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UserError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "radiologist" => Ok(Role::Radiologist),
            "admin" => Ok(Role::Admin),
            "service" => Ok(Role::Service),
            _ => Err(UserError::Invalid(format!("unknown role {s:?} (radiologist, admin, service)"))),
        }
    }
}

/// A user as listed.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Whether they may log in (a password is set).
    pub has_password: bool,
    /// Disabled users' tokens and sessions stop working.
    pub disabled: bool,
    /// The sites whose studies they see (`*`: every site).
    pub sites: Vec<String>,
    /// Live API tokens.
    pub tokens: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// Who a request is from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The sites whose studies they see (`*`: every site).
    pub sites: Vec<String>,
}

impl Identity {
    /// The sites they see.
    pub fn scope(&self) -> firstread_sites::Scope {
        firstread_sites::Scope::of_names(&self.sites)
    }
}

/// The site list stored for a user: each a site name or `*`; none given is the default site.
fn valid_sites(sites: &[String]) -> Result<Vec<String>, UserError> {
    if let Some(bad) = sites.iter().find(|s| *s != firstread_sites::EVERY && !firstread_sites::is_valid(s)) {
        return Err(UserError::Invalid(format!("site {bad:?}: {}, or * for every site", firstread_sites::NAME_RULE)));
    }
    if sites.is_empty() {
        return Ok(vec![firstread_sites::DEFAULT.to_owned()]);
    }
    let mut sites = sites.to_vec();
    sites.sort();
    sites.dedup();
    Ok(sites)
}

/// Why a user operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// Bad input (name, role, password).
    #[error("{0}")]
    Invalid(String),
    /// No such user.
    #[error("no user {0:?}")]
    Unknown(String),
    /// The database's.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Shortest password accepted (characters).
pub const MIN_PASSWORD_CHARS: usize = 12;

/// How long a browser session lasts.
pub const SESSION_HOURS: i64 = 12;

fn sha256_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // base64url without padding, 6 bits at a time
    let mut out = String::from(prefix);
    let mut acc = 0u32;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(char::from(ALPHABET[((acc >> bits) & 63) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (6 - bits)) & 63) as usize]));
    }
    out
}

fn hash_password(password: &str) -> Result<String, UserError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UserError::Invalid(format!("a password needs at least {MIN_PASSWORD_CHARS} characters")));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Invalid(format!("password hashing: {e}")))
}

/// Whether `name` is a well-formed user name (1-64 of A-Z a-z 0-9 . _ @ -).
pub fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
}

fn valid_name(name: &str) -> Result<(), UserError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(UserError::Invalid(format!("user name {name:?}: 1-64 of A-Z a-z 0-9 . _ @ -")))
    }
}

/// Adds a user (`password`: for people; machine clients use tokens) who sees the studies of
/// `sites` (`*`: every site; none: the default site).
///
/// # Errors
/// Invalid name, site or short password, an existing name, the database's.
pub async fn add(
    pool: &PgPool,
    name: &str,
    role: Role,
    password: Option<&str>,
    sites: &[String],
) -> Result<(), UserError> {
    valid_name(name)?;
    let sites = valid_sites(sites)?;
    let hash = password.map(hash_password).transpose()?;
    let inserted = sqlx::query(
        "INSERT INTO users (name, role, password_hash, sites) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(role.as_str())
    .bind(hash)
    .bind(&sites)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(UserError::Invalid(format!("user {name:?} exists")));
    }
    Ok(())
}

/// Every user, by name.
///
/// # Errors
/// The database's.
pub async fn list(pool: &PgPool) -> Result<Vec<User>, UserError> {
    type Row = (String, String, bool, bool, Vec<String>, i64, DateTime<Utc>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT u.name, u.role, u.password_hash IS NOT NULL, u.disabled, u.sites, \
                (SELECT count(*) FROM api_tokens t WHERE t.user_id = u.id AND t.revoked_at IS NULL), u.created_at \
         FROM users u ORDER BY u.name",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(name, role, has_password, disabled, sites, tokens, created_at)| {
            Ok(User { name, role: role.parse()?, has_password, disabled, sites, tokens, created_at })
        })
        .collect()
}

/// Sets a user's password (at least [`MIN_PASSWORD_CHARS`]) and ends their browser sessions; their
/// API tokens stay.
///
/// # Errors
/// A short password, [`UserError::Unknown`], the database's.
pub async fn set_password(pool: &PgPool, name: &str, password: &str) -> Result<(), UserError> {
    let hash = hash_password(password)?;
    let id: Option<i64> = sqlx::query_scalar("UPDATE users SET password_hash = $2 WHERE name = $1 RETURNING id")
        .bind(name)
        .bind(hash)
        .fetch_optional(pool)
        .await?;
    let id = id.ok_or_else(|| UserError::Unknown(name.to_owned()))?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(id).execute(pool).await?;
    Ok(())
}

/// Sets the sites a user sees (`*`: every site; none: the default site); takes effect on their
/// next request.
///
/// # Errors
/// An invalid site, [`UserError::Unknown`], the database's.
pub async fn set_sites(pool: &PgPool, name: &str, sites: &[String]) -> Result<(), UserError> {
    let sites = valid_sites(sites)?;
    let n = sqlx::query("UPDATE users SET sites = $2 WHERE name = $1")
        .bind(name)
        .bind(&sites)
        .execute(pool)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(UserError::Unknown(name.to_owned()));
    }
    Ok(())
}

/// Disables (or enables again) a user; a disabled user's tokens and sessions stop working at
/// once, and their sessions are ended.
///
/// # Errors
/// No such user, the database's.
pub async fn set_disabled(pool: &PgPool, name: &str, disabled: bool) -> Result<(), UserError> {
    let mut tx = pool.begin().await?;
    let id: Option<i64> = sqlx::query_scalar("UPDATE users SET disabled = $2 WHERE name = $1 RETURNING id")
        .bind(name)
        .bind(disabled)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(id) = id else { return Err(UserError::Unknown(name.to_owned())) };
    if disabled {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A new API token for `name`, returned once (only its SHA-256 is kept).
///
/// # Errors
/// No such user, the database's.
pub async fn issue_token(pool: &PgPool, name: &str, label: &str) -> Result<String, UserError> {
    let token = random_secret("fr_");
    let inserted = sqlx::query(
        "INSERT INTO api_tokens (user_id, token_sha256, label) SELECT id, $2, $3 FROM users WHERE name = $1",
    )
    .bind(name)
    .bind(sha256_hex(&token))
    .bind(label)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(UserError::Unknown(name.to_owned()));
    }
    Ok(token)
}

/// Revokes every live API token of `name`; how many.
///
/// # Errors
/// No such user, the database's.
pub async fn revoke_tokens(pool: &PgPool, name: &str) -> Result<u64, UserError> {
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE name = $1").bind(name).fetch_optional(pool).await?;
    let Some(id) = exists else { return Err(UserError::Unknown(name.to_owned())) };
    let done = sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// The user an API token belongs to, if it is live and its user enabled.
///
/// # Errors
/// The database's.
pub async fn identify_token(pool: &PgPool, token: &str) -> Result<Option<Identity>, UserError> {
    if !token.starts_with("fr_") || token.len() > 128 {
        return Ok(None);
    }
    let row: Option<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT u.name, u.role, u.sites FROM api_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL AND NOT u.disabled",
    )
    .bind(sha256_hex(token))
    .fetch_optional(pool)
    .await?;
    row.map(|(name, role, sites)| Ok(Identity { name, role: role.parse()?, sites })).transpose()
}

/// Checks `name`'s password; on success a new session id (for the cookie) and its expiry.
/// Unknown users, users without a password, disabled users and wrong passwords all answer `None`
/// after the same argon2 work (no user enumeration by timing).
///
/// # Errors
/// The database's.
pub async fn login(pool: &PgPool, name: &str, password: &str) -> Result<Option<(String, DateTime<Utc>)>, UserError> {
    let row: Option<(i64, Option<String>, bool)> =
        sqlx::query_as("SELECT id, password_hash, disabled FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    // a hash to verify against when there is nothing to verify (the same cost as a real one)
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = || DUMMY.get_or_init(|| hash_password(&random_secret("")).unwrap_or_default()).clone();
    let stored = row.as_ref().and_then(|(_, h, _)| h.clone()).unwrap_or_else(dummy);
    // argon2id takes tens of milliseconds and 19 MiB: off the async threads, a few at a time
    static VERIFYING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let _permit = VERIFYING.acquire().await.map_err(|e| UserError::Invalid(e.to_string()))?;
    let password = password.to_owned();
    let verified = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored)
            .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    let Some((id, Some(_), false)) = row else { return Ok(None) };
    if !verified {
        return Ok(None);
    }
    // expired sessions go when someone signs in (they no longer work anyway)
    sqlx::query("DELETE FROM sessions WHERE expires_at < now()").execute(pool).await?;
    let session = random_secret("");
    let expires = Utc::now() + Duration::hours(SESSION_HOURS);
    sqlx::query("INSERT INTO sessions (session_sha256, user_id, expires_at) VALUES ($1, $2, $3)")
        .bind(sha256_hex(&session))
        .bind(id)
        .bind(expires)
        .execute(pool)
        .await?;
    Ok(Some((session, expires)))
}

/// The user a session belongs to, if it has not expired and its user is enabled.
///
/// # Errors
/// The database's.
pub async fn identify_session(pool: &PgPool, session: &str) -> Result<Option<Identity>, UserError> {
    if session.is_empty() || session.len() > 128 {
        return Ok(None);
    }
    let row: Option<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT u.name, u.role, u.sites FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.session_sha256 = $1 AND s.expires_at > now() AND NOT u.disabled",
    )
    .bind(sha256_hex(session))
    .fetch_optional(pool)
    .await?;
    row.map(|(name, role, sites)| Ok(Identity { name, role: role.parse()?, sites })).transpose()
}

/// Ends a session.
///
/// # Errors
/// The database's.
pub async fn logout(pool: &PgPool, session: &str) -> Result<(), UserError> {
    sqlx::query("DELETE FROM sessions WHERE session_sha256 = $1").bind(sha256_hex(session)).execute(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_url_safe() {
        let (a, b) = (random_secret("fr_"), random_secret("fr_"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 43, "256 bits in base64url: {a}");
        assert!(a[3..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn passwords_are_argon2id_and_short_ones_refused() {
        assert!(hash_password("short").is_err());
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        let parsed = PasswordHash::new(&h).expect("PHC string");
        assert!(Argon2::default().verify_password(b"correct horse battery", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"correct horse batterz", &parsed).is_err());
        assert!(valid_name("alice.smith@ward-3").is_ok());
        assert!(valid_name("alice smith").is_err());
        assert!(valid_name("").is_err());
    }
}
