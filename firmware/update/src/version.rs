//! Image versions: dot-separated numbers (`0.1.0`, `0.1.0.20261207`).
//!
//! Only digits and dots are accepted: a version is written into boot
//! entries, and systemd-boot orders entries by it (newest first), so the
//! comparison here must agree with its `strverscmp_improved`, which for
//! such strings compares the numbers one by one.

use std::cmp::Ordering;

/// A parsed version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    text: String,
    parts: Vec<u64>,
}

impl Version {
    /// Parses `1.2.3`: 1 to 8 numbers of at most 12 digits, no leading
    /// zeros (systemd would order `01` and `1` alike).
    pub fn parse(s: &str) -> Result<Version, String> {
        let bad = || format!("version {s:?}: expected dot-separated numbers such as 0.1.0");
        if s.is_empty() || s.len() > 64 {
            return Err(bad());
        }
        let mut parts = Vec::new();
        for p in s.split('.') {
            if p.is_empty()
                || p.len() > 12
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                return Err(bad());
            }
            parts.push(p.parse().map_err(|_| bad())?);
        }
        if parts.len() > 8 {
            return Err(bad());
        }
        Ok(Version {
            text: s.to_string(),
            parts,
        })
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        // 1.2 < 1.2.0: the longer one is newer when the rest is equal (as
        // in systemd's comparison).
        self.parts.cmp(&other.parts)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::Version;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn orders_numerically() {
        assert!(v("0.1.10") > v("0.1.9"));
        assert!(v("1.0") > v("0.99.99"));
        assert!(v("0.1.0.2") > v("0.1.0"));
        assert_eq!(v("0.1.0").cmp(&v("0.1.0")), std::cmp::Ordering::Equal);
    }

    #[test]
    fn refuses_anything_else() {
        for s in [
            "",
            "1..2",
            ".1",
            "1.",
            "v1",
            "1.0-rc1",
            "01.2",
            "1.2\nlinux /evil",
            "1 2",
            "1234567890123",
            "1.2.3.4.5.6.7.8.9",
        ] {
            assert!(Version::parse(s).is_err(), "{s:?}");
        }
    }
}
