//! The TLS client configuration of every outbound connection (webhooks, Shared Signals, JWKS,
//! PostgreSQL): the Mozilla roots compiled in, plus the PEM certificates of `--tls-ca-file`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// `extra_ca_file`: PEM certificates trusted besides the Mozilla roots (an internal CA, or a
/// test's). A file that holds none, or cannot be read, is an error that stops start-up.
pub fn client_config(extra_ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra_ca_file {
        let certificates = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("--tls-ca-file {}: {e}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--tls-ca-file {}: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!("--tls-ca-file {}: no PEM certificate in it", path.display()));
        }
        for certificate in certificates {
            roots.add(certificate).map_err(|e| format!("--tls-ca-file {}: {e}", path.display()))?;
        }
    }
    // ring, not aws-lc-rs: it builds with cc alone on 2 cores. rustls deprecates it for
    // lacking post-quantum key exchange, which these connections forgo.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
