//! Field offsets of the running kernel's structures, from its BTF
//! (`/sys/kernel/btf/vmlinux`), for the exec tracepoint: it follows
//! `current->mm->exe_file->f_inode` to the executed file's inode number and
//! its superblock's device, and needs to know where those fields are in
//! this kernel's build (the eBPF programs are built without CO-RE
//! relocations). Read once at start; a kernel without BTF, or without one
//! of the fields, is refused (endpoint mode would otherwise grant bypass
//! to files it cannot tell apart).
//!
//! Only what is needed is parsed: the header, the type section (every
//! kind's size, to walk it), struct and union members, and names.
//! Members inside anonymous structs and unions are found through them.
//! The input is a kernel file, but it is parsed as untrusted bytes:
//! every read is bounds-checked, depth and counts are bounded.
use std::collections::HashMap;

/// `BTF_KIND_*` values used here.
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;
/// Nesting of anonymous members followed at most.
const MAX_DEPTH: usize = 8;

/// One parsed type: its kind, name offset, the `size`/`type` word, and
/// (for structs and unions) its members as `(name offset, type, bit offset)`.
#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name_off: u32,
    size_or_ref: u32,
    members: Vec<(u32, u32, u32)>,
}

/// The parsed BTF.
#[derive(Debug)]
pub(crate) struct Btf {
    /// Index: type id - 1.
    types: Vec<Type>,
    strings: Vec<u8>,
    /// Struct and union names to their type ids (the first one with
    /// members: forward declarations have none).
    by_name: HashMap<String, u32>,
}

/// A malformed or incomplete BTF, or a struct field it does not have.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The kernel's BTF could not be read.
    #[error("kernel BTF: {path}: {source}")]
    Read {
        /// The file.
        path: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not little-endian BTF.
    #[error("kernel BTF: bad magic (not little-endian BTF)")]
    Magic,
    /// A value or section runs past the end.
    #[error("kernel BTF: truncated at byte {at}")]
    Truncated {
        /// Where.
        at: usize,
    },
    /// A type of a kind this parser does not know.
    #[error("kernel BTF: unknown kind {kind} at byte {at}")]
    UnknownKind {
        /// The kind.
        kind: u32,
        /// Where.
        at: usize,
    },
    /// No struct of that name.
    #[error("kernel BTF: no struct {0}")]
    NoStruct(String),
    /// The struct has no such field, or it is a bitfield.
    #[error("kernel BTF: struct {name}: {why} {field}")]
    Field {
        /// The struct.
        name: String,
        /// The field.
        field: String,
        /// `"has no field"` or `"bitfield"`.
        why: &'static str,
    },
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Truncated { at: off })
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub(crate) fn from_kernel() -> Result<Self, BtfError> {
        let p = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(p).map_err(|source| BtfError::Read { path: p, source })?;
        Self::parse(&data)
    }

    /// Parses little-endian BTF (the only byte order this host runs).
    pub(crate) fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err(BtfError::Magic);
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let section = |off: usize, len: usize| {
            hdr_len
                .checked_add(off)
                .and_then(|a| Some((a, a.checked_add(len)?)))
                .and_then(|(a, b)| data.get(a..b))
                .ok_or(BtfError::Truncated { at: hdr_len + off })
        };
        let tsec = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?.to_vec();
        let mut types = Vec::new();
        let mut at = 0;
        while at < tsec.len() {
            let name_off = u32_at(tsec, at)?;
            let info = u32_at(tsec, at + 4)?;
            let size_or_ref = u32_at(tsec, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                // INT, VAR, DECL_TAG: one word.
                1 | 14 | 17 => 4,
                // ARRAY.
                3 => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let raw = u32_at(tsec, m + 8)?;
                        let bits = if kind_flag { raw & 0x00ff_ffff } else { raw };
                        members.push((u32_at(tsec, m)?, u32_at(tsec, m + 4)?, bits));
                    }
                    vlen * 12
                }
                // ENUM, FUNC_PROTO.
                6 | 13 => vlen * 8,
                // DATASEC, ENUM64.
                15 | 19 => vlen * 12,
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC,
                // FLOAT, TYPE_TAG.
                2 | 7..=12 | 16 | 18 => 0,
                kind => return Err(BtfError::UnknownKind { kind, at }),
            };
            at = at
                .checked_add(extra)
                .filter(|&a| a <= tsec.len())
                .ok_or(BtfError::Truncated { at })?;
            types.push(Type {
                kind,
                name_off,
                size_or_ref,
                members,
            });
        }
        let mut btf = Self {
            types,
            strings,
            by_name: HashMap::new(),
        };
        for (i, t) in btf.types.iter().enumerate() {
            if (t.kind == KIND_STRUCT || t.kind == KIND_UNION) && !t.members.is_empty() {
                let name = btf.name(t.name_off).to_string();
                if !name.is_empty() {
                    btf.by_name.entry(name).or_insert(i as u32 + 1);
                }
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let Some(rest) = self.strings.get(off as usize..) else {
            return "";
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn get(&self, id: u32) -> Option<&Type> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    /// `id` through typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..16 {
            let t = self.get(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_ref;
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// The byte offset of `field` in struct `name`, looking through
    /// anonymous struct and union members.
    pub(crate) fn offset(&self, name: &str, field: &str) -> Result<u32, BtfError> {
        let id = *self
            .by_name
            .get(name)
            .ok_or_else(|| BtfError::NoStruct(name.into()))?;
        let t = self
            .get(id)
            .ok_or_else(|| BtfError::NoStruct(name.into()))?;
        let field_err = |why| BtfError::Field {
            name: name.into(),
            field: field.into(),
            why,
        };
        let bits = self
            .find(t, field, 0)
            .ok_or_else(|| field_err("has no field"))?;
        if bits % 8 != 0 {
            return Err(field_err("bitfield"));
        }
        Ok(bits / 8)
    }

    fn find(&self, t: &Type, field: &str, depth: usize) -> Option<u32> {
        if depth > MAX_DEPTH {
            return None;
        }
        for &(name_off, ty, bits) in &t.members {
            let n = self.name(name_off);
            if n == field {
                return Some(bits);
            }
            if n.is_empty()
                && let Some(inner) = self.resolve(ty)
                && (inner.kind == KIND_STRUCT || inner.kind == KIND_UNION)
                && let Some(b) = self.find(inner, field, depth + 1)
            {
                return bits.checked_add(b);
            }
        }
        None
    }
}

/// Where the exec tracepoint finds the executed file's identity in this
/// kernel.
pub(crate) fn exec_file_offsets() -> Result<sluice_common::ExecFileOffsets, BtfError> {
    let btf = Btf::from_kernel()?;
    Ok(sluice_common::ExecFileOffsets {
        task_mm: btf.offset("task_struct", "mm")?,
        mm_exe_file: btf.offset("mm_struct", "exe_file")?,
        file_inode: btf.offset("file", "f_inode")?,
        inode_ino: btf.offset("inode", "i_ino")?,
        inode_sb: btf.offset("inode", "i_sb")?,
        sb_dev: btf.offset("super_block", "s_dev")?,
        enabled: 1,
        reserved: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made BTF: `struct s { int a; union { int b; struct { int c;
    /// int d; }; }; }` with `d` at byte 8.
    fn sample() -> Vec<u8> {
        let strings = b"\0s\0a\0b\0c\0d\0int\0".to_vec();
        let (name_s, name_a, name_b, name_c, name_d, name_int) =
            (1u32, 3u32, 5u32, 7u32, 9u32, 11u32);
        let mut types = Vec::new();
        let word = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
        // 1: int (INT, size 4, encoding word).
        for v in [name_int, 1 << 24, 4, 32] {
            word(&mut types, v);
        }
        // 2: anonymous struct { c @0, d @32 bits }.
        for v in [0, (KIND_STRUCT << 24) | 2, 8, name_c, 1, 0, name_d, 1, 32] {
            word(&mut types, v);
        }
        // 3: anonymous union { b, struct 2 }.
        for v in [0, (KIND_UNION << 24) | 2, 8, name_b, 1, 0, 0, 2, 0] {
            word(&mut types, v);
        }
        // 4: struct s { a @0, union 3 @32 bits }.
        for v in [name_s, (KIND_STRUCT << 24) | 2, 12, name_a, 1, 0, 0, 3, 32] {
            word(&mut types, v);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&[0x9f, 0xeb, 1, 0]);
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_fields_through_anonymous_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.offset("s", "a").unwrap(), 0);
        assert_eq!(btf.offset("s", "b").unwrap(), 4);
        assert_eq!(btf.offset("s", "c").unwrap(), 4);
        assert_eq!(btf.offset("s", "d").unwrap(), 8);
        assert!(btf.offset("s", "e").is_err());
        assert!(btf.offset("t", "a").is_err());
    }

    #[test]
    fn truncated_or_garbage_btf_is_an_error_not_a_panic() {
        let good = sample();
        for n in 0..good.len() {
            let _ = Btf::parse(&good[..n]);
        }
        let mut bad = good.clone();
        bad[28] = 0xff;
        let _ = Btf::parse(&bad);
        assert!(Btf::parse(b"nope").is_err());
    }

    #[test]
    fn the_running_kernel_has_the_exec_fields() {
        // Every kernel sluice runs on has BTF (the eBPF hooks need it).
        let o = exec_file_offsets().expect("offsets from /sys/kernel/btf/vmlinux");
        assert!(
            o.task_mm > 0 && o.mm_exe_file > 0 && o.inode_sb > 0,
            "{o:?}"
        );
    }
}
