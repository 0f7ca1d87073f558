//! Where webhooks may deliver: public addresses only, unless the operator allows private ones.
//!
//! A platform, verifier or auditor chooses its webhook's URL, and tether then makes requests to
//! it and reports the status it got. Without this guard any of them could point tether at its own
//! loopback services, the cloud metadata endpoint or the private network and read the answers'
//! status codes (server-side request forgery). The check runs where the connection is made: the
//! resolver drops every non-public address it finds, so a name that resolves (or is re-bound) to a
//! private address gets nothing, and a literal IP is checked before the request.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

/// Whether an address is reachable on the public internet (not loopback, private, link-local,
/// shared, reserved, documentation, multicast or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let reserved = a == 0                                  // "this network"
        || a >= 240                                        // reserved, broadcast
        || (a == 100 && (64..128).contains(&b))            // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0)                  // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)); // benchmarking
    !(reserved
        || ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_documentation())
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let v4_in = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if ip.is_loopback() || ip.is_unspecified() {
        return false;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // Forms that carry an IPv4 address: the deprecated IPv4-compatible ::a.b.c.d, NAT64
    // (64:ff9b::/96) and 6to4 (2002::/16). They are as public as the address they carry.
    if s[..6] == [0, 0, 0, 0, 0, 0] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(v4_in(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return is_public_v4(v4_in(s[1], s[2]));
    }
    let unique_local = s[0] & 0xfe00 == 0xfc00;
    let link_local = s[0] & 0xffc0 == 0xfe80;
    let site_local = s[0] & 0xffc0 == 0xfec0;
    let documentation = s[0] == 0x2001 && s[1] == 0x0db8;
    // Teredo hides its IPv4 address; local-use NAT64 (64:ff9b:1::/48) translates to anywhere.
    let teredo = s[0] == 0x2001 && s[1] == 0;
    let local_nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1;
    !(ip.is_multicast() || unique_local || link_local || site_local || documentation || teredo || local_nat64)
}

/// Why a URL's host is refused at creation, if it is: a literal non-public address, or a name
/// that always means this machine. Names are checked again, resolved, at each delivery.
pub fn refused_host(host: &str) -> Option<String> {
    let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
    let refused = match host.parse::<IpAddr>() {
        Ok(ip) => !is_public(ip),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    };
    refused.then(|| format!("`url`: {host} is a private, loopback or link-local address; webhooks deliver to public addresses (an operator can allow private ones with --webhooks-allow-private)"))
}

/// The webhook client's resolver: the system's, keeping only the addresses deliveries may use.
#[derive(Debug, Clone, Copy)]
pub struct Resolver {
    pub allow_private: bool,
}

impl tower::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let usable: Vec<SocketAddr> = found.into_iter().filter(|a| allow_private || is_public(a.ip())).collect();
            if usable.is_empty() {
                return Err(io::Error::other(format!("{} resolves to no public address", name.as_str())));
            }
            Ok(usable.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_reserved_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
            "::127.0.0.1",
            "::10.0.0.1",
            "fec0::1",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:a00:1::1",
            "2001:0:4136:e378::1",
        ] {
            assert!(!is_public(ip.parse().expect(ip)), "{ip} counted as public");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(ip.parse().expect(ip)), "{ip} counted as private");
        }
    }

    #[test]
    fn literal_private_hosts_and_localhost_names_are_refused_at_creation() {
        for host in ["127.0.0.1", "[::1]", "169.254.169.254", "LOCALHOST", "localhost.", "api.localhost", "10.0.0.8"] {
            assert!(refused_host(host).is_some(), "{host} was accepted");
        }
        for host in ["hooks.example.com", "93.184.216.34", "[2606:4700:4700::1111]"] {
            assert!(refused_host(host).is_none(), "{host} was refused");
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_private_addresses_unless_allowed() {
        use tower::Service;
        let name: Name = "localhost".parse().expect("name");
        let refused = Resolver { allow_private: false }.call(name.clone()).await;
        assert!(refused.is_err(), "localhost resolved to a usable address: {refused:?}");
        let allowed = Resolver { allow_private: true }.call(name).await.expect("allowed");
        assert!(allowed.into_iter().all(|a| a.ip().is_loopback()));
    }
}
