//! Process patterns for process-based bypass: which executables' sockets
//! bypass the tunnel.
//!
//! A pattern is one of
//! - a name, `curl`: the executable's file name (any directory);
//! - an absolute path with wildcards, `/usr/bin/curl`, `/opt/*/bin/agent`,
//!   `/opt/**/agent*`: `*` matches within one path segment (never `/`),
//!   `**` as a whole segment matches any number of segments (zero
//!   included);
//! - a digest, `sha256:<64 hex digits>`: the executable's content.
//!
//! Matching is pure (the caller supplies the executable's path, and its
//! digest if any digest pattern is configured): this module reads no
//! files; [`sha256_read`] digests what the caller's reader yields. The eBPF side never sees patterns; it
//! gets per-executable verdicts computed here.
//!
//! [`elf`]: which ELF loader (`PT_INTERP`) a program names, from bytes the
//! caller reads.

pub mod elf;

/// Why a pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Empty.
    #[error("empty process pattern")]
    Empty,
    /// A path that does not start with `/`.
    #[error("a path must be absolute (start with /); a bare name matches in any directory")]
    Relative,
    /// `**` mixed with other characters in one segment.
    #[error("'**' must be a whole path segment, as in /opt/**/agent")]
    BadDoubleStar,
    /// An empty segment (`//`) or a `.`/`..` segment.
    #[error("path segment {0:?} is not allowed (no //, . or ..)")]
    BadSegment(String),
    /// A name with a wildcard or NUL.
    #[error("a name is matched exactly: no wildcards (use a path pattern like /**/{0})")]
    NameWildcard(String),
    /// Not `sha256:` and 64 hex digits.
    #[error("expected sha256: followed by 64 hex digits")]
    BadDigest,
}

/// One configured pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessPattern {
    /// The executable's file name.
    Name(String),
    /// An absolute path pattern, split into segments.
    Path(Vec<String>),
    /// The executable's SHA-256.
    Sha256([u8; 32]),
}

impl ProcessPattern {
    /// Parses one pattern.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        if let Some(hex) = s.strip_prefix("sha256:") {
            return parse_digest(hex).map(Self::Sha256);
        }
        if !s.contains('/') {
            if s.contains(['*', '\0']) {
                return Err(PatternError::NameWildcard(s.to_string()));
            }
            return Ok(Self::Name(s.to_string()));
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err(PatternError::Relative);
        };
        let mut segs = Vec::new();
        for seg in rest.split('/') {
            if seg.is_empty() || seg == "." || seg == ".." || seg.contains('\0') {
                return Err(PatternError::BadSegment(seg.to_string()));
            }
            if seg.contains("**") && seg != "**" {
                return Err(PatternError::BadDoubleStar);
            }
            segs.push(seg.to_string());
        }
        Ok(Self::Path(segs))
    }

    /// Does the executable at `exe` (absolute, as the kernel reports it),
    /// with content digest `sha256` (needed only for digest patterns),
    /// match?
    pub fn matches(&self, exe: &str, sha256: Option<&[u8; 32]>) -> bool {
        match self {
            Self::Name(n) => exe.rsplit('/').next() == Some(n.as_str()),
            Self::Path(p) => {
                let Some(rest) = exe.strip_prefix('/') else {
                    return false;
                };
                let segs: Vec<&str> = rest.split('/').collect();
                match_segments(p, &segs)
            }
            Self::Sha256(d) => sha256 == Some(d),
        }
    }
}

impl std::fmt::Display for ProcessPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Path(p) => {
                for s in p {
                    write!(f, "/{s}")?;
                }
                Ok(())
            }
            Self::Sha256(d) => {
                f.write_str("sha256:")?;
                d.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

fn parse_digest(hex: &str) -> Result<[u8; 32], PatternError> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return Err(PatternError::BadDigest);
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16).ok_or(PatternError::BadDigest);
        *o = (digit(pair[0])? << 4 | digit(pair[1])?) as u8;
    }
    Ok(out)
}

/// Path segments against pattern segments: `**` matches any number of
/// segments, `*` within a segment any run of characters.
fn match_segments(pat: &[String], path: &[&str]) -> bool {
    glob(
        pat,
        path,
        |p| p == "**",
        |p, seg| glob(p.as_bytes(), seg.as_bytes(), |c| *c == b'*', |c, x| c == x),
    )
}

/// `pat` against `s`: elements for which `is_star` holds match any run of
/// `s` (empty included), the others one element each when `one` holds.
/// Greedy, with one backtrack point (the last star), so hostile patterns
/// or inputs cost O(pattern x input), never exponential.
fn glob<P, S>(
    pat: &[P],
    s: &[S],
    is_star: impl Fn(&P) -> bool,
    one: impl Fn(&P, &S) -> bool,
) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && is_star(&pat[p]) {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && one(&pat[p], &s[i]) {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            // Let the last star swallow one more element.
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(is_star)
}

/// A list of patterns.
#[derive(Clone, Debug, Default)]
pub struct ProcessSet {
    patterns: Vec<ProcessPattern>,
}

impl ProcessSet {
    /// Builds the set.
    pub fn new(patterns: Vec<ProcessPattern>) -> Self {
        Self { patterns }
    }

    /// True if there is no pattern.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns.
    pub fn patterns(&self) -> &[ProcessPattern] {
        &self.patterns
    }

    /// True if any pattern needs the executable's digest.
    pub fn needs_digest(&self) -> bool {
        self.patterns
            .iter()
            .any(|p| matches!(p, ProcessPattern::Sha256(_)))
    }

    /// The first pattern `exe` matches.
    pub fn matching(&self, exe: &str, sha256: Option<&[u8; 32]>) -> Option<&ProcessPattern> {
        self.patterns.iter().find(|p| p.matches(exe, sha256))
    }
}

/// The SHA-256 of everything `f` yields.
pub fn sha256_read(mut f: impl std::io::Read) -> std::io::Result<[u8; 32]> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf)? {
            0 => break,
            n => ctx.update(&buf[..n]),
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ProcessPattern {
        ProcessPattern::parse(s).unwrap()
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!(p("curl"), ProcessPattern::Name("curl".into()));
        assert_eq!(
            p("/opt/**/bin/agent*"),
            ProcessPattern::Path(vec![
                "opt".into(),
                "**".into(),
                "bin".into(),
                "agent*".into()
            ])
        );
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            p(&format!("sha256:{hex}")).to_string(),
            format!("sha256:{hex}")
        );
        assert_eq!(
            p(&format!("sha256:{}", hex.to_uppercase())).to_string(),
            format!("sha256:{hex}")
        );
        assert_eq!(p("/opt/**/bin/agent*").to_string(), "/opt/**/bin/agent*");
        for (bad, err) in [
            ("", PatternError::Empty),
            ("bin/curl", PatternError::Relative),
            ("/opt/a**/x", PatternError::BadDoubleStar),
            ("/opt//x", PatternError::BadSegment(String::new())),
            ("/opt/../x", PatternError::BadSegment("..".into())),
            ("/opt/x/", PatternError::BadSegment(String::new())),
            ("cu*l", PatternError::NameWildcard("cu*l".into())),
            ("sha256:abc", PatternError::BadDigest),
            (
                &format!("sha256:{}", "g".repeat(64)),
                PatternError::BadDigest,
            ),
        ] {
            assert_eq!(ProcessPattern::parse(bad), Err(err), "{bad:?}");
        }
    }

    #[test]
    fn globs_match_by_segment() {
        let cases: &[(&str, &str, bool)] = &[
            ("curl", "/usr/bin/curl", true),
            ("curl", "/usr/bin/curl2", false),
            ("curl", "/opt/curl/bin/wget", false),
            ("/usr/bin/curl", "/usr/bin/curl", true),
            ("/usr/bin/curl", "/usr/local/bin/curl", false),
            ("/usr/*/curl", "/usr/bin/curl", true),
            ("/usr/*/curl", "/usr/local/bin/curl", false),
            ("/usr/**/curl", "/usr/curl", true),
            ("/usr/**/curl", "/usr/local/bin/curl", true),
            ("/usr/**/curl", "/opt/usr/bin/curl", false),
            ("/**/curl", "/curl", true),
            ("/**/curl", "/a/b/c/curl", true),
            ("/**", "/anything/at/all", true),
            ("/opt/**/bin/agent*", "/opt/x/y/bin/agent-2", true),
            ("/opt/**/bin/agent*", "/opt/bin/agent", true),
            ("/opt/**/bin/agent*", "/opt/bin/x/agent", false),
            ("/opt/*a*b*/x", "/opt/zzaqqbzz/x", true),
            ("/opt/*a*b*/x", "/opt/zzbqqazz/x", false),
            ("/opt/**/x/**/y", "/opt/1/x/2/x/3/y", true),
            ("/opt/**/x/**/y", "/opt/1/y/2/x", false),
            ("/usr/bin/curl", "usr/bin/curl", false),
        ];
        for &(pat, exe, want) in cases {
            assert_eq!(p(pat).matches(exe, None), want, "{pat} vs {exe}");
        }
        // Hostile sizes stay fast (no exponential backtracking).
        let pat = format!("/{}x", "**/".repeat(30));
        let exe = format!("/{}y", "a/".repeat(200));
        assert!(!p(&pat).matches(&exe, None));
        let seg = format!("/{}b", "*a".repeat(50));
        assert!(!p(&seg).matches(&format!("/{}", "a".repeat(4000)), None));
    }

    #[test]
    fn digests_match_file_content() {
        let d = sha256_read(&b""[..]).unwrap();
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let set = ProcessSet::new(vec![p("wget"), p(&format!("sha256:{empty}"))]);
        assert!(set.needs_digest());
        assert_eq!(
            set.matching("/tmp/renamed-tool", Some(&d))
                .map(ToString::to_string),
            Some(format!("sha256:{empty}"))
        );
        assert!(set.matching("/tmp/renamed-tool", None).is_none());
        assert!(set.matching("/usr/bin/wget", None).is_some());
        assert!(
            set.matching("/tmp/tool", Some(&sha256_read(&b"x"[..]).unwrap()))
                .is_none()
        );
    }
}
