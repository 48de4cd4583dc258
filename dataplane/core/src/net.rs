//! Small address types shared by the config, the classifier loader and the
//! policy tables: an IP prefix with strict parsing.
//!
//! No I/O here.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// An IPv4 or IPv6 prefix such as `203.0.113.0/24` or `2001:db8::/32`.
///
/// Parsing is strict: the host bits after the prefix length must be zero, so
/// that a typo such as `203.0.113.7/24` is reported instead of silently
/// widened. A bare address is a host prefix (`/32` or `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The part before `/` is not an IP address.
    #[error("`{0}` is not an IPv4 or IPv6 address")]
    BadAddress(String),
    /// The part after `/` is not a number in range for the address family.
    #[error("prefix length `{len}` is out of range for {family} (0..={max})")]
    BadLength {
        /// The length as written.
        len: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// 32 or 128.
        max: u8,
    },
    /// Bits after the prefix length are set.
    #[error("host bits are set after /{len}: did you mean {suggested}?")]
    HostBitsSet {
        /// The prefix length.
        len: u8,
        /// The prefix with its host bits cleared.
        suggested: String,
    },
}

impl Prefix {
    /// A prefix from an address and a length; host bits are cleared.
    ///
    /// # Panics
    /// If `len` exceeds the family's width (a programming error; parsed
    /// input goes through [`FromStr`], which reports it).
    pub fn new(addr: IpAddr, len: u8) -> Self {
        let max = max_len(addr);
        assert!(len <= max, "prefix length {len} > {max}");
        Self {
            addr: mask(addr, len),
            len,
        }
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    #[allow(
        clippy::len_without_is_empty,
        reason = "a prefix length, not a container size"
    )]
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for `0.0.0.0/0` and `::/0`.
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` lies within this prefix (always false across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.len) == self.addr
            }
            _ => false,
        }
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| PrefixError::BadAddress(a.to_string()))?;
        let max = max_len(addr);
        let len = match l {
            None => max,
            Some(l) => match l.trim().parse::<u8>() {
                Ok(v) if v <= max => v,
                _ => {
                    return Err(PrefixError::BadLength {
                        len: l.to_string(),
                        family: if addr.is_ipv4() { "IPv4" } else { "IPv6" },
                        max,
                    });
                }
            },
        };
        let p = Prefix::new(addr, len);
        if p.addr != addr {
            return Err(PrefixError::HostBitsSet {
                len,
                suggested: p.to_string(),
            });
        }
        Ok(p)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_contains() {
        let p: Prefix = "203.0.113.0/24".parse().unwrap();
        assert!(p.contains("203.0.113.99".parse().unwrap()));
        assert!(!p.contains("203.0.114.1".parse().unwrap()));
        assert!(!p.contains("2001:db8::1".parse().unwrap()));
        let h: Prefix = "2001:db8::20".parse().unwrap();
        assert_eq!(h.len(), 128);
        let z: Prefix = "::/0".parse().unwrap();
        assert!(z.is_default() && z.contains("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn refuses_bad_input() {
        assert!(matches!(
            "203.0.113.7/24".parse::<Prefix>(),
            Err(PrefixError::HostBitsSet { len: 24, .. })
        ));
        assert!(matches!(
            "203.0.113.0/33".parse::<Prefix>(),
            Err(PrefixError::BadLength { .. })
        ));
        assert!(matches!(
            "example/24".parse::<Prefix>(),
            Err(PrefixError::BadAddress(_))
        ));
        assert!("2001:db8::/129".parse::<Prefix>().is_err());
        assert!("".parse::<Prefix>().is_err());
    }
}
