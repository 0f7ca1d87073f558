//! The HTTP client of tether's outbound requests (webhook deliveries, Shared Signals pushes,
//! JWKS fetches): `http` and `https`, the latter verified by rustls against the Mozilla roots
//! plus the operator's own CA file (`--tls-ca-file`), every connection through the
//! private-address guard of [`super::destinations`].

use std::path::Path;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

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
        let tls = crate::tls::client_config(extra_ca_file)?;
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
