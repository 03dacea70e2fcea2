//! resolv.conf content for a pod, from CRI `DNSConfig`.

use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::types::DnsConfig;

/// glibc reads at most this many name servers (`MAXNS` in resolv.h).
const MAX_SERVERS: usize = 3;
/// Search list limits: glibc before 2.26 stopped at 6 domains / 256 bytes; kubelet allows 32
/// domains and 2048 bytes, which we follow.
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_BYTES: usize = 2048;

/// Renders resolv.conf content from `dns`, refusing values that could inject lines.
///
/// Servers must be IP addresses (at most 3, the resolver's limit); search domains and
/// options must be non-empty and free of whitespace and `#`.
///
/// ```
/// let dns = crius_net::DnsConfig {
///     servers: vec!["10.96.0.10".into()],
///     searches: vec!["default.svc.cluster.local".into()],
///     options: vec!["ndots:5".into()],
/// };
/// let text = crius_net::resolv_conf(&dns).unwrap();
/// assert_eq!(text, "nameserver 10.96.0.10\nsearch default.svc.cluster.local\noptions ndots:5\n");
/// ```
pub fn resolv_conf(dns: &DnsConfig) -> Result<String> {
    let bad = |reason: String| Error::InvalidDns { reason };
    if dns.servers.len() > MAX_SERVERS {
        return Err(bad(format!(
            "{} servers given, at most {MAX_SERVERS} are used by the resolver",
            dns.servers.len()
        )));
    }
    let mut out = String::new();
    for server in &dns.servers {
        let ip: IpAddr = server
            .trim()
            .parse()
            .map_err(|_| bad(format!("server {server:?} is not an ip address")))?;
        out.push_str(&format!("nameserver {ip}\n"));
    }
    if dns.searches.len() > MAX_SEARCHES {
        return Err(bad(format!(
            "{} search domains given, at most {MAX_SEARCHES} allowed",
            dns.searches.len()
        )));
    }
    for word in dns.searches.iter().chain(&dns.options) {
        if word.is_empty() || word.contains(|c: char| c.is_whitespace() || c == '#' || c == ';') {
            return Err(bad(format!(
                "{word:?} must be non-empty without whitespace, '#' or ';'"
            )));
        }
    }
    if !dns.searches.is_empty() {
        let line = dns.searches.join(" ");
        if line.len() > MAX_SEARCH_BYTES {
            return Err(bad(format!(
                "search list is {} bytes, at most {MAX_SEARCH_BYTES} allowed",
                line.len()
            )));
        }
        out.push_str(&format!("search {line}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Ok(out)
}

/// Longest hostname the kernel accepts (`HOST_NAME_MAX`).
const MAX_HOSTNAME: usize = 64;

/// Renders /etc/hostname content for `hostname`, which must be an RFC 1123 name (labels of
/// lowercase letters, digits and `-`, at most 64 bytes as the kernel's limit).
///
/// ```
/// assert_eq!(crius_net::hostname_file("web-0").unwrap(), "web-0\n");
/// assert!(crius_net::hostname_file("bad name").is_err());
/// ```
pub fn hostname_file(hostname: &str) -> Result<String> {
    let bad = |reason: &str| Error::InvalidRequest {
        field: "hostname",
        reason: format!("{hostname:?} {reason}"),
    };
    if hostname.is_empty() || hostname.len() > MAX_HOSTNAME {
        return Err(bad("must be 1 to 64 bytes long"));
    }
    for label in hostname.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(bad(
                "must be lowercase rfc 1123 labels (a-z, 0-9, '-') separated by '.'",
            ));
        }
    }
    Ok(format!("{hostname}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_with_newline_or_uppercase_is_refused() {
        assert!(hostname_file("a\nb").is_err());
        assert!(hostname_file("Web").is_err());
        assert!(hostname_file("-web").is_err());
        assert!(hostname_file(&"a".repeat(65)).is_err());
        assert_eq!(hostname_file("pod.ns.svc").unwrap(), "pod.ns.svc\n");
    }

    #[test]
    fn empty_config_gives_empty_file() {
        assert_eq!(resolv_conf(&DnsConfig::default()).unwrap(), "");
    }

    #[test]
    fn newline_in_search_domain_is_refused() {
        let dns = DnsConfig {
            searches: vec!["a\nnameserver 1.2.3.4".into()],
            ..Default::default()
        };
        assert_eq!(
            resolv_conf(&dns).unwrap_err().kind(),
            crate::ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn hostname_as_server_is_refused() {
        let dns = DnsConfig {
            servers: vec!["dns.example".into()],
            ..Default::default()
        };
        assert!(resolv_conf(&dns).is_err());
    }

    #[test]
    fn more_than_three_servers_are_refused() {
        let dns = DnsConfig {
            servers: vec!["1.1.1.1".into(); 4],
            ..Default::default()
        };
        assert!(resolv_conf(&dns).is_err());
    }

    #[test]
    fn ipv6_servers_are_written() {
        let dns = DnsConfig {
            servers: vec!["fd00::10".into()],
            options: vec!["ndots:5".into(), "edns0".into()],
            ..Default::default()
        };
        assert_eq!(
            resolv_conf(&dns).unwrap(),
            "nameserver fd00::10\noptions ndots:5 edns0\n"
        );
    }
}
