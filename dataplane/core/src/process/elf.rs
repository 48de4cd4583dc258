//! The ELF program-header walk for `PT_INTERP`: which loader a program
//! names. Endpoint mode's exec watcher reads any user's executable with
//! it, so the file is untrusted: bounded reads, anything malformed is "no
//! loader". Pure: the caller hands in a positioned reader ([`ReadAt`]),
//! implemented here for bytes in memory; reading a file is the caller's.

/// Longest `PT_INTERP` read.
const MAX_INTERP: usize = 4096;
/// Most program headers walked.
const MAX_PHDRS: usize = 128;

/// Positioned reads: bytes in memory here; the caller implements it for
/// a file (the gateway's exec watcher).
pub trait ReadAt {
    /// Reads at `off` into `buf`; 0 at the end.
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize>;
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        let Some(rest) = usize::try_from(off).ok().and_then(|o| self.get(o..)) else {
            return Ok(0);
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
}

/// Reads at `off` until `buf` is full or the end: the bytes read.
///
/// # Errors
/// The reader's, other than [`std::io::ErrorKind::Interrupted`].
pub fn read_full_at(
    file: &(impl ReadAt + ?Sized),
    buf: &mut [u8],
    mut off: u64,
) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                off += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The `PT_INTERP` of an ELF file whose first bytes are `head`, if any.
/// Bounded: at most [`MAX_PHDRS`] headers, [`MAX_INTERP`] bytes; anything
/// malformed is "no loader". The file is untrusted (any user's program).
pub fn elf_interp(file: &(impl ReadAt + ?Sized), head: &[u8]) -> Option<String> {
    let at = |b: &[u8], off: usize, len: usize| -> Option<u64> {
        let s = b.get(off..off + len)?;
        let le = head.get(5) == Some(&1);
        let mut v = 0u64;
        for i in 0..len {
            let byte = if le { s[len - 1 - i] } else { s[i] };
            v = (v << 8) | u64::from(byte);
        }
        Some(v)
    };
    if head.len() < 52 || &head[..4] != b"\x7fELF" {
        return None;
    }
    let wide = match head[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let (phoff, phentsize, phnum) = if wide {
        (at(head, 0x20, 8)?, at(head, 0x36, 2)?, at(head, 0x38, 2)?)
    } else {
        (at(head, 0x1c, 4)?, at(head, 0x2a, 2)?, at(head, 0x2c, 2)?)
    };
    let (phentsize, phnum) = (phentsize as usize, (phnum as usize).min(MAX_PHDRS));
    if phentsize < if wide { 56 } else { 32 } || phentsize > 256 {
        return None;
    }
    let mut ph = vec![0u8; phentsize];
    for i in 0..phnum {
        let off = phoff.checked_add((i * phentsize) as u64)?;
        if read_full_at(file, &mut ph, off).ok()? != phentsize {
            return None;
        }
        if at(&ph, 0, 4)? != 3 {
            continue;
        }
        let (seg_offset, seg_len) = if wide {
            (at(&ph, 8, 8)?, at(&ph, 32, 8)?)
        } else {
            (at(&ph, 4, 4)?, at(&ph, 16, 4)?)
        };
        let len = usize::try_from(seg_len).ok()?.min(MAX_INTERP);
        let mut s = vec![0u8; len];
        let n = read_full_at(file, &mut s, seg_offset).ok()?;
        s.truncate(n);
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        s.truncate(end);
        return String::from_utf8(s).ok().filter(|s| s.starts_with('/'));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuzz_seeds_name_their_loader() {
        for f in ["interp64", "interp32"] {
            let p = format!("{}/../fuzz/corpus/elf/{f}", env!("CARGO_MANIFEST_DIR"));
            let data = std::fs::read(&p).unwrap();
            let interp = elf_interp(data.as_slice(), &data[..data.len().min(64)]);
            assert_eq!(
                interp.as_deref(),
                Some("/lib64/ld-linux-x86-64.so.2"),
                "{f}"
            );
        }
    }
}
