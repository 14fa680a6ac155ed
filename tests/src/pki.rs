//! A throw-away public key infrastructure for the TLS tests, made with the `openssl` command line
//! (RSA 2048, as a hospital CA would issue): a CA, certificates it signs for 127.0.0.1 /
//! localhost (server and client use), and a second, unrelated CA for the certificates a node must
//! refuse.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate and its private key (PEM files).
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub certificate: PathBuf,
    /// Its private key (PKCS#8, unencrypted).
    pub private_key: PathBuf,
}

/// A CA in a folder.
#[derive(Debug)]
pub struct Ca {
    dir: PathBuf,
    name: String,
    /// The CA's own certificate (what peers trust).
    pub certificate: PathBuf,
    key: PathBuf,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

impl Ca {
    /// A new self-signed CA `name` with its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let certificate = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            path(&key),
            "-out",
            path(&certificate),
        ]);
        Ca { dir: dir.to_owned(), name: name.to_owned(), certificate, key }
    }

    /// A certificate for `cn`, valid for 127.0.0.1 and localhost, for TLS servers and clients.
    pub fn issue(&self, cn: &str) -> Issued {
        let stem = format!("{}-{cn}", self.name);
        let (key, csr, certificate, ext) = (
            self.dir.join(format!("{stem}.key")),
            self.dir.join(format!("{stem}.csr")),
            self.dir.join(format!("{stem}.crt")),
            self.dir.join(format!("{stem}.ext")),
        );
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("extensions file");
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            path(&key),
            "-out",
            path(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            path(&csr),
            "-CA",
            path(&self.certificate),
            "-CAkey",
            path(&self.key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            path(&ext),
            "-out",
            path(&certificate),
        ]);
        Issued { certificate, private_key: key }
    }
}

impl Issued {
    /// The base64 SHA-256 of the certificate's public key (SubjectPublicKeyInfo), as Chromium's
    /// `--ignore-certificate-errors-spki-list` takes it.
    pub fn spki_sha256(&self) -> String {
        let script = format!(
            "openssl x509 -pubkey -noout -in '{}' | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
            path(&self.certificate)
        );
        let out = Command::new("sh").args(["-c", &script]).output().expect("openssl runs");
        assert!(out.status.success(), "SPKI hash: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}
