//! [`Ipv4Cidr`]: the pod CIDR of the built-in network.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// An IPv4 network such as `10.88.0.0/16`; host bits are cleared on parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The network `addr/prefix`; refuses prefixes longer than /30 (no room for pods).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, Error> {
        if prefix > 30 {
            return Err(Error::InvalidRequest {
                field: "pod_cidr",
                reason: format!("{addr}/{prefix}: prefix must be at most /30"),
            });
        }
        let network = Ipv4Addr::from(u32::from(addr) & mask(prefix));
        Ok(Ipv4Cidr { network, prefix })
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The gateway: the first host address, assigned to the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    /// The pod addresses: after the gateway, before the broadcast address.
    pub(crate) fn pod_range(&self) -> (u32, u32) {
        let first = u32::from(self.network) + 2;
        let broadcast = u32::from(self.network) | !mask(self.prefix);
        (first, broadcast - 1)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidRequest {
            field: "pod_cidr",
            reason: format!("{s:?} is not an ipv4 cidr such as 10.88.0.0/16"),
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        Ipv4Cidr::new(addr, prefix)
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<Ipv4Cidr> for String {
    fn from(c: Ipv4Cidr) -> String {
        c.to_string()
    }
}

impl Default for Ipv4Cidr {
    /// `10.88.0.0/16`, the conventional default pod network of CRI runtimes.
    fn default() -> Self {
        Ipv4Cidr {
            network: Ipv4Addr::new(10, 88, 0, 0),
            prefix: 16,
        }
    }
}

/// An IPv6 network such as `fd00:88::/64`, for dual-stack pods; host bits are cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv6Cidr {
    network: Ipv6Addr,
    prefix: u8,
}

fn mask6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl Ipv6Cidr {
    /// The network `addr/prefix`; refuses prefixes longer than /120.
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Result<Self, Error> {
        if prefix > 120 {
            return Err(Error::InvalidRequest {
                field: "pod_cidr_v6",
                reason: format!("{addr}/{prefix}: prefix must be at most /120"),
            });
        }
        let network = Ipv6Addr::from(u128::from(addr) & mask6(prefix));
        Ok(Ipv6Cidr { network, prefix })
    }

    /// The network address.
    pub fn network(&self) -> Ipv6Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The gateway: the first address after the network's, assigned to the bridge.
    pub fn gateway(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.network) + 1)
    }

    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & mask6(self.prefix) == u128::from(self.network)
    }

    /// The pod addresses: after the gateway, up to the last address.
    pub(crate) fn pod_range(&self) -> (u128, u128) {
        let first = u128::from(self.network) + 2;
        (first, u128::from(self.network) | !mask6(self.prefix))
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv6Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidRequest {
            field: "pod_cidr_v6",
            reason: format!("{s:?} is not an ipv6 cidr such as fd00:88::/64"),
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv6Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        Ipv6Cidr::new(addr, prefix)
    }
}

impl TryFrom<String> for Ipv6Cidr {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<Ipv6Cidr> for String {
    fn from(c: Ipv6Cidr) -> String {
        c.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_clears_host_bits_and_finds_gateway_and_range() {
        let c: Ipv4Cidr = "10.1.2.3/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.1.2.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 1, 2, 1));
        let (first, last) = c.pod_range();
        assert_eq!(Ipv4Addr::from(first), Ipv4Addr::new(10, 1, 2, 2));
        assert_eq!(Ipv4Addr::from(last), Ipv4Addr::new(10, 1, 2, 254));
        assert!(c.contains(Ipv4Addr::new(10, 1, 2, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 1, 3, 1)));
    }

    #[test]
    fn ipv6_cidr_parses_and_finds_gateway_and_range() {
        let c: Ipv6Cidr = "fd00:88::5/64".parse().unwrap();
        assert_eq!(c.to_string(), "fd00:88::/64");
        assert_eq!(c.gateway(), "fd00:88::1".parse::<Ipv6Addr>().unwrap());
        let (first, _) = c.pod_range();
        assert_eq!(
            Ipv6Addr::from(first),
            "fd00:88::2".parse::<Ipv6Addr>().unwrap()
        );
        assert!(c.contains("fd00:88::ffff".parse().unwrap()));
        assert!("fd00::/121".parse::<Ipv6Cidr>().is_err());
        assert!("10.0.0.0/8".parse::<Ipv6Cidr>().is_err());
    }

    #[test]
    fn malformed_or_tiny_cidrs_are_refused() {
        for s in ["10.0.0.0", "10.0.0.0/31", "x/8", "10.0.0.0/33", "::1/64"] {
            assert!(s.parse::<Ipv4Cidr>().is_err(), "{s}");
        }
    }
}
