//! An XDP program that gives every frame one fixed verdict, for
//! benchmarks: two instructions (`r0 = action; exit`) loaded with
//! `BPF_PROG_LOAD` and attached to an interface with a BPF link
//! (`BPF_LINK_CREATE`, attach type `BPF_XDP`).
//!
//! The lab benchmark's packet-rate ceiling is such a program returning
//! `XDP_DROP` on the receiving veth: the most frames per second that veth
//! takes at all, with nothing done to them. It needs no ELF object, no map
//! and no helper, so it costs the kernel exactly what running any XDP
//! program costs.
//!
//! The link lives as long as the [`FixedVerdict`] (or the process): closing
//! its descriptor detaches the program, so a benchmark that dies leaves
//! nothing attached.
//!
//! The same raw load answers one question about the kernel for the
//! gateway: whether XDP programs may call `bpf_xdp_adjust_meta`
//! ([`xdp_adjust_meta_supported`]), which decides which of the
//! classifier's two programs it loads. What this module must not do:
//! anything else sluice's own dataplane relies on (the classifier is
//! loaded by the gateway, through aya).
use std::{
    ffi::CString,
    io,
    os::fd::{FromRawFd as _, OwnedFd},
};

/// What the program returns for every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `XDP_DROP`: the frame is dropped by the driver.
    Drop,
    /// `XDP_PASS`: the frame goes on to the kernel's stack.
    Pass,
}

impl Action {
    fn code(self) -> i32 {
        match self {
            Action::Drop => 1,
            Action::Pass => 2,
        }
    }
}

/// Where the program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`; veth has it).
    Native,
    /// On the generic, skb-based hook (`XDP_FLAGS_SKB_MODE`).
    Generic,
}

impl Mode {
    fn flags(self) -> u32 {
        match self {
            Mode::Native => XDP_FLAGS_DRV_MODE,
            Mode::Generic => XDP_FLAGS_SKB_MODE,
        }
    }
}

/// A fixed-verdict XDP program attached to an interface; detached when
/// dropped.
#[derive(Debug)]
pub struct FixedVerdict {
    // The link first: it is what holds the attachment.
    _link: OwnedFd,
    _prog: OwnedFd,
}

// `enum bpf_cmd`, `enum bpf_prog_type`, `enum bpf_attach_type` and the XDP
// attach flags, from `linux/bpf.h` and `linux/if_link.h`.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `struct bpf_insn`: opcode, registers (dst low nibble, src high),
/// offset, immediate.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to
/// `expected_attach_type` (the kernel zero-fills what follows).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_LINK_CREATE` part of `union bpf_attr`, up to `flags`.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `bpf(cmd, attr, size)`; the new descriptor on success.
///
/// # Safety
/// `attr` must be the command's `bpf_attr` layout, every pointer in it
/// valid for the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<OwnedFd> {
    let size = std::mem::size_of::<T>();
    // SAFETY: the caller vouches for `attr`; the kernel reads `size` bytes
    // of it and writes nothing back for these commands.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_ref(attr), size) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(rc).map_err(|_| io::Error::other("bpf: descriptor out of range"))?;
    // SAFETY: a descriptor the kernel just created for us and nobody else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `BPF_PROG_LOAD` of an XDP program (attach type `BPF_XDP`, as aya and
/// [`FixedVerdict`] attach them), licence GPL, no log.
fn load_xdp(insns: &[Insn], name: &[u8]) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name[..n]);
    let load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| io::Error::other("program too long"))?,
        insns: insns.as_ptr().addr() as u64,
        license: license.as_ptr().addr() as u64,
        prog_name,
        expected_attach_type: BPF_XDP,
        ..ProgLoadAttr::default()
    };
    // SAFETY: `load` is `BPF_PROG_LOAD`'s layout; `insns` (`insn_cnt`
    // entries) and `license` live until the call returns; no log buffer.
    unsafe { bpf(BPF_PROG_LOAD, &load) }
}

/// `BPF_FUNC_xdp_adjust_meta`.
const HELPER_XDP_ADJUST_META: i32 = 54;

/// Loads `r2 = -4; call helper; r0 = XDP_PASS; exit` (`r1` is the
/// context): a program whose only question to the verifier is whether XDP
/// may call `helper(ctx, -4)`.
fn load_helper_probe(helper: i32) -> io::Result<OwnedFd> {
    let insns = [
        // BPF_ALU64 | BPF_MOV | BPF_K: r2 = -4
        Insn {
            code: 0xb7,
            regs: 2,
            off: 0,
            imm: -4,
        },
        // BPF_JMP | BPF_CALL: helper(r1 = ctx, r2)
        Insn {
            code: 0x85,
            regs: 0,
            off: 0,
            imm: helper,
        },
        // r0 = XDP_PASS
        Insn {
            code: 0xb7,
            regs: 0,
            off: 0,
            imm: Action::Pass.code(),
        },
        // BPF_JMP | BPF_EXIT
        Insn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    load_xdp(&insns, b"sluice_probe")
}

/// Whether this kernel lets XDP programs call `bpf_xdp_adjust_meta`
/// (helper 54), which the classifier's `classify` program uses to put its
/// verdict in the frame's metadata area. Some kernels refuse it ("program
/// of this type cannot use helper `bpf_xdp_adjust_meta#54`") while allowing
/// `bpf_xdp_adjust_head`; there the gateway loads `classify_head`, which
/// puts the verdict in front of the frame instead.
///
/// Answered by loading a four-instruction XDP program that calls the
/// helper (and closing it at once): `false` only when the kernel refuses
/// that program with `EINVAL`, the verifier's answer for a helper the
/// program type may not call. Any other failure (no `CAP_BPF`, no BPF
/// syscall at all) says nothing about the helper, so the answer is `true`
/// and loading the classifier itself then reports the real error. Needs
/// the privileges of loading an XDP program; costs one verification of
/// four instructions.
pub fn xdp_adjust_meta_supported() -> bool {
    match load_helper_probe(HELPER_XDP_ADJUST_META) {
        Ok(_fd) => true,
        Err(e) => e.raw_os_error() != Some(libc::EINVAL),
    }
}

impl FixedVerdict {
    /// Loads the program and attaches it to `interface` (resolved in the
    /// calling thread's network namespace) in `mode`. Fails if another XDP
    /// program is attached there in that mode.
    pub fn attach(interface: &str, action: Action, mode: Mode) -> io::Result<Self> {
        let name = CString::new(interface)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        // SAFETY: a NUL-terminated string that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let insns = [
            // BPF_ALU64 | BPF_MOV | BPF_K: r0 = action
            Insn {
                code: 0xb7,
                regs: 0,
                off: 0,
                imm: action.code(),
            },
            // BPF_JMP | BPF_EXIT
            Insn {
                code: 0x95,
                regs: 0,
                off: 0,
                imm: 0,
            },
        ];
        let prog = load_xdp(&insns, b"sluice_fix")?;
        let link = LinkCreateAttr {
            prog_fd: u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&prog))
                .map_err(|_| io::Error::other("negative descriptor"))?,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: mode.flags(),
        };
        // SAFETY: `link` is `BPF_LINK_CREATE`'s layout, with no pointers.
        let link = unsafe { bpf(BPF_LINK_CREATE, &link)? };
        Ok(Self {
            _link: link,
            _prog: prog,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_kernel() {
        // Offsets of `expected_attach_type` and `flags` in `union bpf_attr`.
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::size_of::<LinkCreateAttr>(), 16);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }

    /// `BPF_FUNC_xdp_adjust_head`.
    const HELPER_XDP_ADJUST_HEAD: i32 = 44;

    #[test]
    fn the_helper_probe_is_a_valid_program() {
        if !sluice_lab::require_root("the_helper_probe_is_a_valid_program") {
            return;
        }
        // The same program calling `bpf_xdp_adjust_head` (which every
        // kernel with XDP lets XDP call) loads: a refusal of the
        // `adjust_meta` probe is about the helper, not the program.
        load_helper_probe(HELPER_XDP_ADJUST_HEAD).expect("the adjust_head probe loads");
        let meta = load_helper_probe(HELPER_XDP_ADJUST_META);
        assert_eq!(
            xdp_adjust_meta_supported(),
            meta.is_ok(),
            "the probe's answer is whether the adjust_meta program loads: {meta:?}"
        );
        if let Err(e) = meta {
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        }
    }
}
