//! Loads the server's certificate, key and client CA for mutual TLS, so a speaker without a certificate
//! from the cluster's CA cannot open a session.

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::{Error, TlsFiles};

async fn read(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    tokio::fs::read(path)
        .await
        .map_err(|source| Error::ReadTls {
            path: path.to_owned(),
            source,
        })
}

/// A server TLS configuration that requires a client certificate signed by `files.ca`.
pub(super) async fn server_config(files: &TlsFiles) -> Result<ServerTlsConfig, Error> {
    let cert = read(&files.cert).await?;
    let key = read(&files.key).await?;
    let ca = read(&files.ca).await?;
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca))
        .client_auth_optional(false))
}
