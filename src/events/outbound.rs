//! The HTTP client of tether's outbound requests (webhook deliveries, Shared Signals pushes,
//! JWKS fetches): `http` and `https`, the latter verified by rustls against the Mozilla roots
//! plus the operator's own CA file (`--tls-ca-file`), every connection through the
//! private-address guard of [`super::destinations`].

use std::path::Path;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::destinations::Resolver;

/// The client: cheap to clone (its pool is shared).
pub type OutboundClient = Client<HttpsConnector<HttpConnector<Resolver>>, Full<Bytes>>;

/// The trust roots and the client built on them, once per process.
#[derive(Clone)]
pub struct Outbound {
    pub client: OutboundClient,
    pub allow_private: bool,
}

impl Outbound {
    /// `extra_ca_file`: PEM certificates trusted besides the Mozilla roots (an internal CA, or a
    /// test's). A file that holds none, or cannot be read, stops start-up.
    pub fn new(allow_private: bool, extra_ca_file: Option<&Path>) -> Result<Outbound, String> {
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
        // lacking post-quantum key exchange, which these short-lived pushes and fetches forgo.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(Resolver { allow_private });
        // The https connector wraps this one: it must let https URLs through to it.
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Outbound { client: Client::builder(TokioExecutor::new()).build(connector), allow_private })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_stops_start_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let refused = Outbound::new(false, Some(&empty)).err().expect("refused");
        assert!(refused.contains("no PEM certificate"), "{refused}");
        let missing = Outbound::new(false, Some(&dir.path().join("absent.pem"))).err().expect("refused");
        assert!(missing.contains("absent.pem"), "{missing}");
        assert!(Outbound::new(false, None).is_ok(), "the Mozilla roots alone");
    }
}
