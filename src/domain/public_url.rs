//! The base URL clients reach tether at: every URL tether advertises (metadata documents, the
//! Shared Signals issuer, push endpoints) is built from it.

use std::fmt;
use std::net::SocketAddr;

/// An absolute `http` or `https` URL with a host, no query, fragment or credentials, and no
/// trailing slash (so `join("/x")` never doubles one).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    /// `--public-url`: checked, with its trailing slashes removed.
    pub fn parse(text: &str) -> Result<PublicUrl, String> {
        let text = text.trim_end_matches('/');
        let rest = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
            .ok_or("the public URL must start with https:// or http://")?;
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() {
            return Err("the public URL has no host".into());
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '@' | '\\')) {
            return Err("the public URL may hold no spaces, query, fragment or credentials".into());
        }
        Ok(PublicUrl(text.to_owned()))
    }

    /// Where a process listening on `addr` is reached on this host: a wildcard address becomes
    /// loopback, since `0.0.0.0` is not an address a client can use (behind a proxy or on another
    /// host, set `--public-url`).
    pub fn for_listener(addr: SocketAddr) -> PublicUrl {
        let mut addr = addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        PublicUrl(format!("http://{addr}"))
    }

    /// The URL of `path` (which starts with `/`) under this base.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }
}

impl Default for PublicUrl {
    /// `--listen`'s default.
    fn default() -> Self {
        PublicUrl("http://127.0.0.1:8700".into())
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_url_is_an_absolute_http_url_without_a_trailing_slash() {
        let url = PublicUrl::parse("https://tether.example.com/base/").expect("valid");
        assert_eq!(url.join("/oauth2/token"), "https://tether.example.com/base/oauth2/token");
        assert!(url.is_https());
        for bad in
            ["tether.example.com", "ftp://x", "https://", "https:///x", "https://a b", "https://x/?q", "https://u@x"]
        {
            assert!(PublicUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_wildcard_listener_is_reached_on_loopback() {
        let url = PublicUrl::for_listener("0.0.0.0:8700".parse().expect("addr"));
        assert_eq!(url.as_str(), "http://127.0.0.1:8700");
        let url = PublicUrl::for_listener("[::]:9".parse().expect("addr"));
        assert_eq!(url.as_str(), "http://[::1]:9");
        assert_eq!(PublicUrl::for_listener("10.0.0.5:80".parse().expect("addr")).as_str(), "http://10.0.0.5:80");
    }
}
