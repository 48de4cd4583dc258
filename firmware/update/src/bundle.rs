//! The update bundle: a ustar archive of, in this order,
//!
//! 1. `manifest.json`: format, compatible, arch, version, and each
//!    payload's name, size and SHA-256;
//! 2. `manifest.json.minisig`: a minisign (ed25519) signature of it;
//! 3. the payloads named by [`FILES`], in that order: the slot's root
//!    filesystem, its kernel and its initrd.
//!
//! [`check`] reads a bundle once from start to end: the signature is
//! checked before any payload is handed on, and each payload's hash after
//! it was read. The installer reads the bundle twice: a first pass that
//! hands the payloads to nowhere (so that a bad signature, a truncated
//! file, a wrong architecture or a corrupt payload is refused with nothing
//! written), then a second pass that writes them, checking everything
//! again (the file could have changed in between: the slot then stays
//! unbootable, see [`crate::install`]).

use std::io::{self, Read};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{layout, version::Version};

/// The only manifest format so far.
pub const FORMAT: u32 = 1;
/// What a bundle must be for.
pub const COMPATIBLE: &str = "sluice-appliance";
/// The manifest's name in the archive.
pub const MANIFEST: &str = "manifest.json";
/// The signature's name in the archive.
pub const SIGNATURE: &str = "manifest.json.minisig";
/// The payloads, in archive order, with their largest allowed size.
pub const FILES: [(&str, u64); 3] = [
    ("rootfs.squashfs", layout::ROOT_A.mib << 20),
    ("vmlinuz", 64 << 20),
    ("initrd.img", 128 << 20),
];
/// Caps on the manifest and the signature.
const MANIFEST_MAX: u64 = 64 << 10;
const SIGNATURE_MAX: u64 = 4 << 10;

/// A bundle's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub compatible: String,
    /// `std::env::consts::ARCH` of the machines it is for (`x86_64`).
    pub arch: String,
    /// See [`Version`].
    pub version: String,
    pub files: Vec<FileRef>,
}

/// One payload of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    pub name: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// What the machine that installs a bundle requires of it.
#[expect(missing_debug_implementations, reason = "holds a key without Debug")]
pub struct Expect<'a> {
    /// This machine's architecture.
    pub arch: &'a str,
    /// The running version: a bundle must be newer.
    pub running: &'a Version,
    /// The key bundles are signed with.
    pub key: &'a minisign_verify::PublicKey,
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the bundle: {0}")]
    Io(#[from] io::Error),
    #[error("not an update bundle: {0}")]
    Format(String),
    #[error("the bundle is truncated ({0})")]
    Truncated(String),
    #[error("the bundle's signature does not verify with this machine's update key: {0}")]
    Signature(String),
    #[error("the bundle's manifest is invalid: {0}")]
    Manifest(String),
    #[error("the bundle is for {bundle:?} machines, this one is {this:?}")]
    Arch { bundle: String, this: String },
    #[error("the bundle's version {bundle} is not newer than the running {running}")]
    NotNewer { bundle: String, running: String },
    #[error("payload {name}: {why}")]
    Payload { name: String, why: String },
}

/// A bundle whose signature, manifest and payloads all checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    pub version: Version,
}

/// Reads a bundle from `r` to its end: the manifest and its signature
/// (checked against `expect` before anything else), then each payload,
/// handed to `sink` as a reader of exactly its manifest size; its hash
/// is checked once `sink` returns (what `sink` left unread is read and
/// hashed too). Nothing after the payloads is allowed.
///
/// # Errors
/// The first thing found wrong, with nothing handed to `sink` after it;
/// `sink`'s own errors as [`BundleError::Io`].
pub fn check<R: Read>(
    r: R,
    expect: &Expect<'_>,
    mut sink: impl FnMut(&FileRef, &mut dyn Read) -> io::Result<()>,
) -> Result<Verified, BundleError> {
    let mut r = r;
    let manifest_bytes = small_entry(&mut r, MANIFEST, MANIFEST_MAX)?;
    let signature = small_entry(&mut r, SIGNATURE, SIGNATURE_MAX)?;
    let signature = std::str::from_utf8(&signature)
        .ok()
        .and_then(|s| minisign_verify::Signature::decode(s).ok())
        .ok_or_else(|| BundleError::Signature("the signature file is malformed".into()))?;
    expect
        .key
        .verify(&manifest_bytes, &signature, false)
        .map_err(|e| BundleError::Signature(e.to_string()))?;
    // Signed: now it may be parsed.
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| BundleError::Manifest(e.to_string()))?;
    let version = validate(&manifest, expect)?;
    for want in &manifest.files {
        let Some(size) = header(&mut r, &want.name)? else {
            return Err(BundleError::Truncated(format!(
                "it ends before {}",
                want.name
            )));
        };
        if size != want.size {
            return Err(BundleError::Payload {
                name: want.name.clone(),
                why: format!(
                    "{size} bytes in the archive, the manifest says {}",
                    want.size
                ),
            });
        }
        let mut hashing = Hashing {
            inner: (&mut r).take(want.size),
            hash: Sha256::new(),
            n: 0,
        };
        sink(want, &mut hashing).map_err(|e| truncated(e, &want.name))?;
        io::copy(&mut hashing, &mut io::sink()).map_err(|e| truncated(e, &want.name))?;
        if hashing.n != want.size {
            return Err(BundleError::Truncated(format!(
                "{} has {} of its {} bytes",
                want.name, hashing.n, want.size
            )));
        }
        let got = hex::encode(hashing.hash.finalize());
        if got != want.sha256 {
            return Err(BundleError::Payload {
                name: want.name.clone(),
                why: format!("SHA-256 {got}, the manifest says {}", want.sha256),
            });
        }
        skip_padding(&mut r, want.size, &want.name)?;
    }
    // The end of the archive: a zero block (or nothing).
    let mut block = [0u8; BLOCK];
    match read_block(&mut r, &mut block) {
        Ok(false) => {}
        Ok(true) if block.iter().all(|&b| b == 0) => {}
        Ok(true) => {
            return Err(BundleError::Format(
                "unexpected entry after the payloads".into(),
            ));
        }
        Err(e) => return Err(BundleError::Io(e)),
    }
    Ok(Verified { manifest, version })
}

/// Checks a signed manifest's fields; returns its version.
fn validate(m: &Manifest, expect: &Expect<'_>) -> Result<Version, BundleError> {
    if m.format != FORMAT {
        return Err(BundleError::Manifest(format!(
            "format {} (this updater reads {FORMAT})",
            m.format
        )));
    }
    if m.compatible != COMPATIBLE {
        return Err(BundleError::Manifest(format!(
            "compatible {:?}, expected {COMPATIBLE:?}",
            m.compatible
        )));
    }
    if m.arch != expect.arch {
        return Err(BundleError::Arch {
            bundle: m.arch.clone(),
            this: expect.arch.to_string(),
        });
    }
    let version = Version::parse(&m.version).map_err(BundleError::Manifest)?;
    if version <= *expect.running {
        return Err(BundleError::NotNewer {
            bundle: version.to_string(),
            running: expect.running.to_string(),
        });
    }
    let names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
    let want: Vec<&str> = FILES.iter().map(|(n, _)| *n).collect();
    if names != want {
        return Err(BundleError::Manifest(format!(
            "payloads {names:?}, expected {want:?}"
        )));
    }
    for (f, (_, max)) in m.files.iter().zip(FILES) {
        if f.size == 0 || f.size > max {
            return Err(BundleError::Manifest(format!(
                "{} is {} bytes (1 to {max})",
                f.name, f.size
            )));
        }
        if f.sha256.len() != 64
            || !f
                .sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(BundleError::Manifest(format!(
                "{}: sha256 is not 64 lower-case hex digits",
                f.name
            )));
        }
    }
    Ok(version)
}

/// A tar block.
const BLOCK: usize = 512;

/// Reads one block: `Ok(false)` at a clean end of input (nothing read).
fn read_block(r: &mut impl Read, block: &mut [u8; BLOCK]) -> io::Result<bool> {
    let mut got = 0;
    while got < BLOCK {
        match r.read(&mut block[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The next entry's header, which must be a plain ustar regular file
/// named `name` (no long names, no pax or GNU extensions: nothing is
/// read before the signature that is not bounded by a block); its size.
/// `None` at the end of the input or the archive.
fn header(r: &mut impl Read, name: &str) -> Result<Option<u64>, BundleError> {
    let mut h = [0u8; BLOCK];
    if !read_block(r, &mut h).map_err(|e| truncated(e, name))? || h.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let field = |range: std::ops::Range<usize>| {
        let f = &h[range];
        &f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())]
    };
    let octal = |range: std::ops::Range<usize>| -> Option<u64> {
        let f = std::str::from_utf8(field(range)).ok()?.trim_matches(' ');
        if f.is_empty() || f.len() > 11 {
            return None;
        }
        u64::from_str_radix(f, 8).ok()
    };
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if octal(148..156) != Some(sum) {
        return Err(BundleError::Format(format!(
            "the header where {name} was expected has a bad checksum"
        )));
    }
    if &h[257..263] != b"ustar\0" {
        return Err(BundleError::Format(format!(
            "the header where {name} was expected is not ustar"
        )));
    }
    if !matches!(h[156], b'0' | 0) || !field(345..500).is_empty() {
        return Err(BundleError::Format(format!(
            "{name}: only plain regular files with short names are allowed"
        )));
    }
    let got = field(0..100);
    if got != name.as_bytes() {
        return Err(BundleError::Format(format!(
            "entry {:?} where {name} was expected",
            String::from_utf8_lossy(got)
        )));
    }
    octal(124..136)
        .map(Some)
        .ok_or_else(|| BundleError::Format(format!("{name}: bad size field")))
}

/// Reads the zero padding after an entry of `size` bytes.
fn skip_padding(r: &mut impl Read, size: u64, name: &str) -> Result<(), BundleError> {
    let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
    let mut buf = [0u8; BLOCK];
    let buf = &mut buf[..usize::try_from(pad).unwrap_or(0)];
    r.read_exact(buf).map_err(|e| truncated(e, name))?;
    Ok(())
}

/// The next entry, which must be the regular file `name` of at most
/// `max` bytes; its content.
fn small_entry(r: &mut impl Read, name: &str, max: u64) -> Result<Vec<u8>, BundleError> {
    let size = header(r, name)?.ok_or_else(|| BundleError::Format(format!("no {name}")))?;
    if size > max {
        return Err(BundleError::Format(format!(
            "{name} is {size} bytes (at most {max})"
        )));
    }
    let mut buf = vec![0u8; usize::try_from(size).unwrap_or(0)];
    r.read_exact(&mut buf).map_err(|e| truncated(e, name))?;
    skip_padding(r, size, name)?;
    Ok(buf)
}

fn truncated(e: io::Error, name: &str) -> BundleError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        BundleError::Truncated(format!("in {name}"))
    } else {
        BundleError::Io(e)
    }
}

/// Hashes and counts what is read through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// Builds a bundle (the image build's side; also the tests'): `payloads`
/// in [`FILES`] order, `sign` turns the manifest's bytes into the
/// signature file's text.
///
/// # Errors
/// Of `out`, of the payload readers, or of `sign`.
pub fn write<W: io::Write>(
    out: W,
    arch: &str,
    version: &Version,
    payloads: [(&mut dyn Read, u64, String); 3],
    sign: impl FnOnce(&[u8]) -> io::Result<String>,
) -> io::Result<W> {
    let files: Vec<FileRef> = FILES
        .iter()
        .zip(&payloads)
        .map(|((name, _), (_, size, sha))| FileRef {
            name: (*name).to_string(),
            size: *size,
            sha256: sha.clone(),
        })
        .collect();
    let manifest = Manifest {
        format: FORMAT,
        compatible: COMPATIBLE.into(),
        arch: arch.into(),
        version: version.to_string(),
        files,
    };
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
    let sig = sign(&bytes)?;
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Deterministic);
    let append = |b: &mut tar::Builder<W>, name: &str, size: u64, r: &mut dyn Read| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, r)
    };
    append(&mut b, MANIFEST, bytes.len() as u64, &mut &bytes[..])?;
    append(&mut b, SIGNATURE, sig.len() as u64, &mut sig.as_bytes())?;
    for ((name, _), (r, size, _)) in FILES.iter().zip(payloads) {
        append(&mut b, name, size, r)?;
    }
    b.into_inner()
}

/// The SHA-256 (hex) and length of what `r` gives.
///
/// # Errors
/// Of `r`.
pub fn sha256(mut r: impl Read) -> io::Result<(String, u64)> {
    let mut h = Hashing {
        inner: &mut r,
        hash: Sha256::new(),
        n: 0,
    };
    io::copy(&mut h, &mut io::sink())?;
    Ok((hex::encode(h.hash.finalize()), h.n))
}
