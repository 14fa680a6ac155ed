//! TLS for firstread, read from PEM files: the server configuration of the DICOM TLS listener and
//! of HTTPS, and the client configuration of the C-STORE SCU. DICOM TLS follows PS3.15 Annex B.9,
//! the BCP 195 TLS Secure Transport Connection Profile; HTTPS the same BCP 195 (RFC 9325).
//!
//! Both sides speak TLS 1.3 and 1.2 only, with rustls' cipher suites (ECDHE key exchange with
//! AES-GCM or ChaCha20-Poly1305: the suites RFC 9325 / BCP 195 recommends; dcmtk's default
//! non-downgrading BCP 195 profile negotiates with them). The server's certificate can be read
//! again while the node runs ([`ServerTls::reload`], on SIGHUP); a connection already
//! established keeps the configuration it started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::Deserialize;

/// A TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {message}")]
    File {
        /// What the file was for ("certificate", "private key", "CA certificates").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// rustls refused the combination (e.g. a key that does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A TLS server's files (`[dimse.tls]`, `[http.tls]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsFiles {
    /// PEM certificate chain of this node, its own certificate first.
    pub certificate: PathBuf,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// PEM CA certificates. When set, every peer must present a certificate issued by one of
    /// them (PS3.15 B.9: the peers are authenticated); when absent, any peer may connect with TLS
    /// and the AE-title policy alone decides.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// A C-STORE SCU destination's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsFiles {
    /// PEM CA certificates the peer's certificate must chain to.
    pub ca: PathBuf,
    /// PEM certificate chain this node presents (peers that verify their clients need it).
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// PEM private key of `certificate`.
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// The name the peer's certificate must hold (DNS name or IP address); default: the
    /// destination's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// rustls with *ring*: the same provider as the rest of the binary (reqwest), no C toolchain. rustls
/// deprecates it for lacking post-quantum key exchange, which neither BCP 195 nor DICOM peers
/// (dcmtk with OpenSSL) use today.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |message: String| TlsError::File { what, path: path.to_owned(), message };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        what: "private key",
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, "CA certificates")? {
        roots.add(cert).map_err(|e| TlsError::File {
            what: "CA certificates",
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// Builds the server configuration from its files.
///
/// # Errors
/// [`TlsError`] when a file is unreadable or the key does not fit the certificate.
pub fn server_config(files: &ServerTlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let certs = certificates(&files.certificate, "certificate")?;
    let key = private_key(&files.private_key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(certs, key).map_err(|e| TlsError::Config(e.to_string()))
}

/// A TLS server's configuration, replaceable while connections are accepted.
#[derive(Debug)]
pub struct ServerTls {
    files: ServerTlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Reads the files.
    ///
    /// # Errors
    /// See [`server_config`].
    pub fn load(files: ServerTlsFiles) -> Result<Self, TlsError> {
        let config = Arc::new(server_config(&files)?);
        Ok(ServerTls { files, current: RwLock::new(config) })
    }

    /// Reads the files again; on an error the configuration in use stays.
    ///
    /// # Errors
    /// See [`server_config`].
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.files)?);
        match self.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The files it was read from.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }
}

/// A C-STORE SCU's TLS configuration for one destination and the name its certificate must hold.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The rustls configuration.
    pub config: Arc<ClientConfig>,
    /// DNS name or IP address checked against the peer's certificate.
    pub server_name: String,
}

/// Builds the client configuration for a destination at `host`.
///
/// # Errors
/// [`TlsError`] when a file is unreadable, only one of certificate and key is given, the key
/// does not fit, or the server name is not a DNS name or IP address.
pub fn client_config(files: &ClientTlsFiles, host: &str) -> Result<ClientTls, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(&files.ca)?);
    let config = match (&files.certificate, &files.private_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(certificates(cert, "certificate")?, private_key(key)?)
            .map_err(|e| TlsError::Config(e.to_string()))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Config(
                "a client certificate needs its private key and the key its certificate".into(),
            ))
        }
    };
    let server_name = files.server_name.clone().unwrap_or_else(|| host.to_owned());
    ServerName::try_from(server_name.as_str())
        .map_err(|e| TlsError::Config(format!("server name {server_name:?}: {e}")))?;
    Ok(ClientTls { config: Arc::new(config), server_name })
}
