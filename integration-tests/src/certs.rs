//! A throwaway certificate authority per test bed, so every TLS path (etcd, kube-apiserver, controller<->
//! speaker mTLS) is exercised with real certificates and nothing is shared between runs.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::{Result, io_err};

/// What a leaf certificate may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server only.
    Server,
    /// TLS client only.
    Client,
    /// Both (etcd members, which are clients of each other).
    ServerAndClient,
}

/// A CA that signs leaf certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

/// Paths of a leaf written to disk, with the CA that signed it.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The leaf certificate.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
}

impl Ca {
    /// A new self-signed CA.
    pub fn new(common_name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem,
        })
    }

    /// The CA certificate, PEM-encoded.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a leaf. `organizations` become O= entries (Kubernetes reads them as groups); `sans` may be
    /// DNS names or IP addresses.
    pub fn issue(
        &self,
        common_name: &str,
        organizations: &[&str],
        sans: &[&str],
        usage: Usage,
    ) -> Result<Leaf> {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = name(common_name, organizations);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes the CA certificate as `<dir>/ca.crt` and returns its path.
    pub fn write_ca(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("ca.crt");
        write(&path, &self.cert_pem)?;
        Ok(path)
    }

    /// Issues a leaf and writes it (and the CA) into `dir` as `<stem>.crt` / `<stem>.key` / `ca.crt`.
    pub fn issue_files(
        &self,
        dir: &Path,
        stem: &str,
        organizations: &[&str],
        sans: &[&str],
        usage: Usage,
    ) -> Result<TlsFiles> {
        let leaf = self.issue(stem, organizations, sans, usage)?;
        let files = TlsFiles {
            ca: self.write_ca(dir)?,
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        write(&files.cert, &leaf.cert_pem)?;
        write(&files.key, &leaf.key_pem)?;
        Ok(files)
    }
}

/// A fresh ECDSA P-256 key pair, as PKCS#8 private and SPKI public PEM (e.g. a service-account signing key).
pub fn key_pair_pem() -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

fn name(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    for org in organizations {
        dn.push(DnType::OrganizationName, *org);
    }
    dn
}

pub(crate) fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(io_err(format!("writing {}", path.display())))
}
