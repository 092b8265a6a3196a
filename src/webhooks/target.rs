//! Which addresses a webhook may post to. Unless
//! `[webhooks] allow_private_targets` is set, a receiver must be on a public
//! address: loopback, link-local, private, CGNAT, multicast, unspecified
//! and broadcast addresses are refused, whatever the URL's spelling (the
//! `url` crate reads decimal, octal and hex IPv4 hosts as the address they
//! mean; an IPv4-mapped IPv6 address is judged as its IPv4 address).
//!
//! A URL is checked when a webhook is put and again on every connection:
//! an IP host before the post, a name by [`Resolver`], which resolves it,
//! keeps only the allowed addresses and refuses the name when none is left,
//! so a name whose DNS answer changed is never connected to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A target refused: the address and its class.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "url resolves to {ip}, {class} address; set [webhooks] allow_private_targets = true \
     (PUSHD_WEBHOOK_ALLOW_PRIVATE_TARGETS) to allow private targets"
)]
pub struct Refused {
    /// The address.
    pub ip: IpAddr,
    /// Its class, with its article (`a loopback`).
    pub class: &'static str,
}

/// The class of a non-public address, with its article; `None` for an
/// address a webhook may post to.
pub fn class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => class_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => class_v4(v4),
            None => class_v6(v6),
        },
    }
}

/// The IPv4 address an IPv6 address carries to reach it: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`, RFC 6052) and 6to4 (`2002:aabb:ccdd::`, RFC 3056)
/// all end up at that IPv4 address, so they are judged by it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    match s {
        // `::` and `::1` are themselves, not 0.0.0.0 and 0.0.0.1.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
    }
}

fn class_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback")
    } else if ip.is_link_local() {
        Some("a link-local")
    } else if ip.is_private() {
        Some("a private")
    } else if a == 100 && b & 0xc0 == 64 {
        Some("a CGNAT")
    } else if ip.is_multicast() {
        Some("a multicast")
    } else if a == 0 {
        // 0.0.0.0/8, "this network": 0.0.0.0 reaches the host itself.
        Some("an unspecified")
    } else if ip.is_broadcast() {
        Some("a broadcast")
    } else if a >= 240 {
        // 240.0.0.0/4, reserved for future use: no public host is there.
        Some("a reserved")
    } else {
        None
    }
}

fn class_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("a loopback")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a private")
    } else if ip.is_multicast() {
        Some("a multicast")
    } else if ip.is_unspecified() {
        Some("an unspecified")
    } else {
        None
    }
}

/// Refuses `ip` if it is not public.
pub fn check_ip(ip: IpAddr) -> Result<(), Refused> {
    match class(ip) {
        Some(class) => Err(Refused { ip, class }),
        None => Ok(()),
    }
}

/// The address of a URL whose host is an IP address (in any spelling the
/// `url` crate reads); `None` for a name.
pub fn literal(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Refuses a URL whose host is, or resolves to, a non-public address.
/// Blocks on DNS for a name; a name that does not resolve now passes (it
/// is checked again on every connection).
pub fn check_url(url: &Url) -> Result<(), Refused> {
    if let Some(ip) = literal(url) {
        return check_ip(ip);
    }
    let Some(host) = url.host_str() else {
        return Ok(());
    };
    let Ok(mut addrs) = (host, url.port_or_known_default().unwrap_or(0)).to_socket_addrs() else {
        return Ok(());
    };
    addrs.try_for_each(|a| check_ip(a.ip()))
}

/// A DNS resolver that answers only the public addresses of a name, and
/// refuses a name with none (see the module's doc).
#[derive(Clone, Copy, Debug, Default)]
pub struct Resolver;

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused.get_or_insert(e);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (true, Some(refused)) => Err(refused.into()),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_non_public_class_and_spelling_is_refused() {
        for (url, ip, class) in [
            ("http://127.0.0.1/", "127.0.0.1", "a loopback"),
            ("http://127.1.2.3:8080/", "127.1.2.3", "a loopback"),
            ("http://2130706433/", "127.0.0.1", "a loopback"),
            ("http://0177.0.0.1/", "127.0.0.1", "a loopback"),
            ("http://0x7f.0.0.1/", "127.0.0.1", "a loopback"),
            ("http://0x7f000001/", "127.0.0.1", "a loopback"),
            ("http://127.1/", "127.0.0.1", "a loopback"),
            ("http://[::1]/", "::1", "a loopback"),
            (
                "http://[::ffff:127.0.0.1]/",
                "::ffff:127.0.0.1",
                "a loopback",
            ),
            ("http://[::ffff:7f00:1]/", "::ffff:127.0.0.1", "a loopback"),
            ("http://169.254.169.254/", "169.254.169.254", "a link-local"),
            ("http://[fe80::1]/", "fe80::1", "a link-local"),
            ("http://10.1.2.3/", "10.1.2.3", "a private"),
            ("http://172.16.0.1/", "172.16.0.1", "a private"),
            ("http://172.31.255.255/", "172.31.255.255", "a private"),
            ("http://192.168.1.1/", "192.168.1.1", "a private"),
            ("http://[fd00::1]/", "fd00::1", "a private"),
            ("http://[fc00::1]/", "fc00::1", "a private"),
            ("http://100.64.0.1/", "100.64.0.1", "a CGNAT"),
            ("http://100.127.255.254/", "100.127.255.254", "a CGNAT"),
            ("http://224.0.0.1/", "224.0.0.1", "a multicast"),
            ("http://[ff02::1]/", "ff02::1", "a multicast"),
            ("http://0.0.0.0/", "0.0.0.0", "an unspecified"),
            ("http://0/", "0.0.0.0", "an unspecified"),
            ("http://[::]/", "::", "an unspecified"),
            ("http://255.255.255.255/", "255.255.255.255", "a broadcast"),
            ("http://240.0.0.1/", "240.0.0.1", "a reserved"),
            ("http://[::7f00:1]/", "::7f00:1", "a loopback"),
            (
                "http://[64:ff9b::a9fe:a9fe]/",
                "64:ff9b::a9fe:a9fe",
                "a link-local",
            ),
            ("http://[2002:a00:1::]/", "2002:a00:1::", "a private"),
            ("http://[2002:7f00:1::1]/", "2002:7f00:1::1", "a loopback"),
        ] {
            let parsed = Url::parse(url).unwrap();
            let refused = check_url(&parsed).expect_err(url);
            assert_eq!(refused.ip, ip.parse::<IpAddr>().unwrap(), "{url}");
            assert_eq!(refused.class, class, "{url}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for url in [
            "http://93.184.216.34/",
            "http://172.32.0.1/",
            "http://100.128.0.1/",
            "http://[2606:2800:220:1::1]/",
            "http://[::ffff:93.184.216.34]/",
            "http://[64:ff9b::5db8:d822]/",
            "http://[2002:5db8:d822::1]/",
        ] {
            assert_eq!(check_url(&Url::parse(url).unwrap()), Ok(()), "{url}");
        }
    }

    #[test]
    fn the_message_names_the_class_and_the_setting() {
        let e = check_ip("127.0.0.1".parse().unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "url resolves to 127.0.0.1, a loopback address; set [webhooks] \
             allow_private_targets = true (PUSHD_WEBHOOK_ALLOW_PRIVATE_TARGETS) \
             to allow private targets"
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_of_loopback() {
        let name: Name = "localhost".parse().unwrap();
        let e = Resolver.resolve(name).await.err().expect("refused");
        let refused = e.downcast_ref::<Refused>().expect("a Refused");
        assert_eq!(refused.class, "a loopback");
    }
}
