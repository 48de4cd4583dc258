//! The configured domain list: exact names and `*.suffix` wildcards,
//! validated once at load time and matched without allocation.

use std::collections::HashSet;

/// Why a configured domain pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Empty, or only dots.
    #[error("empty domain name")]
    Empty,
    /// Longer than 253 characters (without the trailing dot).
    #[error("longer than 253 characters")]
    TooLong,
    /// A label is empty (`a..b`) or longer than 63 characters.
    #[error("label {0:?} is empty or longer than 63 characters")]
    BadLabel(String),
    /// A character outside letters, digits, `-` and `_`.
    #[error(
        "{0:?} is not allowed in a domain name (letters, digits, '-' and '_'; write international names in their xn-- form)"
    )]
    BadChar(char),
    /// `*` other than as a whole first label (`*.example.com`).
    #[error("'*' is only allowed as the whole first label, as in *.example.com")]
    BadWildcard,
}

/// One configured pattern: `example.com` (that name only) or
/// `*.example.com` (every name below it, not `example.com` itself, as
/// PAC's `dnsDomainIs(host, ".example.com")` and most products read it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// The name itself, lowercase, no trailing dot.
    Exact(String),
    /// Names strictly below this suffix, lowercase, no trailing dot.
    Below(String),
}

impl Pattern {
    /// Parses and validates one pattern (case-insensitive, a trailing dot
    /// allowed).
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let s = s.trim();
        let s = s.strip_suffix('.').unwrap_or(s);
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if name.is_empty() {
            return Err(PatternError::Empty);
        }
        if name.len() > 253 {
            return Err(PatternError::TooLong);
        }
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(PatternError::BadLabel(label.to_string()));
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(if c == '*' {
                    PatternError::BadWildcard
                } else {
                    PatternError::BadChar(c)
                });
            }
        }
        let name = name.to_ascii_lowercase();
        Ok(if wild {
            Pattern::Below(name)
        } else {
            Pattern::Exact(name)
        })
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Exact(n) => f.write_str(n),
            Pattern::Below(n) => write!(f, "*.{n}"),
        }
    }
}

/// A set of patterns, matched against names from DNS messages.
#[derive(Clone, Debug, Default)]
pub struct DomainSet {
    exact: HashSet<String>,
    below: HashSet<String>,
}

impl DomainSet {
    /// Builds the set.
    pub fn new(patterns: impl IntoIterator<Item = Pattern>) -> Self {
        let mut s = Self::default();
        for p in patterns {
            match p {
                Pattern::Exact(n) => s.exact.insert(n),
                Pattern::Below(n) => s.below.insert(n),
            };
        }
        s
    }

    /// True if no pattern is configured.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.below.is_empty()
    }

    /// Does `name` (ASCII, lowercase, no trailing dot: [`normalize`])
    /// match a pattern?
    pub fn matches(&self, name: &str) -> bool {
        if self.exact.contains(name) {
            return true;
        }
        // Every proper suffix that starts after a dot.
        let mut rest = name;
        while let Some(i) = rest.find('.') {
            rest = &rest[i + 1..];
            if self.below.contains(rest) {
                return true;
            }
        }
        false
    }
}

/// A DNS name as [`DomainSet::matches`] wants it: ASCII lowercase, without
/// the trailing dot.
pub fn normalize(ascii_name: &str) -> String {
    let s = ascii_name.strip_suffix('.').unwrap_or(ascii_name);
    s.to_ascii_lowercase()
}
