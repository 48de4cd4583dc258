//! `/proc/self/mountinfo`'s text (read by the caller).

/// A mount point's field as mountinfo escapes it (space, tab, newline and
/// backslash as a backslash and three octal digits), undone. Anything
/// else after a backslash is kept as it is.
#[must_use]
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| {
            (b'0'..=b'3').contains(&d[0]) && d[1..].iter().all(|c| (b'0'..=b'7').contains(c))
        });
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount point of a mountinfo line (its fifth field), unescaped.
#[must_use]
pub fn mount_point(line: &str) -> Option<String> {
    line.split(' ').nth(4).map(unescape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_undone_and_nothing_else() {
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape("/x\\134y"), "/x\\y");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/trail\\04"), "/trail\\04");
        assert_eq!(unescape("/odd\\9\\777\\+12\\"), "/odd\\9\\777\\+12\\");
        assert_eq!(
            mount_point("36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw"),
            Some("/mnt/a b".into())
        );
        assert_eq!(mount_point("36 35"), None);
    }
}
