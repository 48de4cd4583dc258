//! Endpoint mode's socket hooks: which of the host's own sockets bypass
//! the tunnel, decided in the kernel when the socket is made or connects.
//!
//! - `cgroup/sock_create`: a socket created by a process in
//!   [`maps::PROCESSES`] gets the bypass mark before it exists for the
//!   application, so even its first packet is routed outside the tunnel
//!   (the endpoint's policy rules send marked packets to the main table).
//! - `cgroup/connect4`, `cgroup/connect6`: a connection to a destination in
//!   the bypass tries (configured prefixes, VPN gateways, addresses
//!   answered for bypassed domains) gets the mark before the kernel routes
//!   it (the hook runs ahead of the route lookup); every connection is
//!   recorded in [`maps::FLOWS`] with its process and verdict.
//! - `cgroup/sendmsg4`, `cgroup/sendmsg6`: an unconnected send from a
//!   marked socket (connected to a bypassed destination before, or made by
//!   a listed process and handed on) to a destination that must be
//!   tunnelled, by a process that is not listed, is refused (`EPERM`):
//!   the mark would otherwise route it direct. Unconnected sends are never
//!   marked by destination (the kernel reads the socket's mark for a
//!   datagram before this hook runs); they follow the process mark and the
//!   routing table (configured prefixes are also `throw` routes).
//! - `cgroup/sock_release`: the socket's flow entry goes.
//! - tracepoints `sched_process_fork` / `sched_process_exit`: a child starts
//!   with its parent's entry (before it runs), an exiting task's entry goes.
//! - tracepoint `sched_process_exec`: a successful `execve` applies the
//!   verdict user space wrote for it while the kernel held the exec (a
//!   fanotify permission event), if it is fresh and names the file the
//!   process now runs (device and inode of `current->mm->exe_file`, found
//!   through [`EXEC_FILE`]'s offsets); without one (an exec sluice did not
//!   see) the process is tunnelled. A verdict for an exec that then failed
//!   is never applied to the program that keeps running, nor to another
//!   file the process executes next (a `memfd` sluice never sees).
//!
//! The hooks steer; they refuse only where steering is impossible (a mark
//! that cannot be set or cleared, a send that the mark would leak).
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_probe_read_kernel,
        generated::{
            bpf_get_current_task, bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_getsockopt,
            bpf_ktime_get_ns, bpf_setsockopt,
        },
    },
    macros::map,
    maps::Array,
    programs::{SockAddrContext, SockContext, TracePointContext},
};
use sluice_common::{
    BypassEntry, EXEC_OLD_PID_OFFSET, ExecFileOffsets, ExecGrant, FlowEntry, FlowVerdict,
    GRANT_WINDOW_NS, ProcessEntry, SockConfig, SockCounter,
};

use crate::maps;

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const SOL_SOCKET: i32 = 1;
const SO_MARK: i32 = 36;
/// The hooks' "allow" return value.
const ALLOW: i32 = 1;
/// The hooks' "refuse" return value (the syscall fails with `EPERM`).
const REFUSE: i32 = 0;

/// Where the executed file's identity is in this kernel
/// ([`sluice_common::EXEC_FILE_MAP`], written by user space from the
/// kernel's BTF before the hooks are enabled).
#[map]
static EXEC_FILE: Array<ExecFileOffsets> = Array::with_max_entries(1, 0);

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
fn kread<T>(base: u64, off: u32) -> Option<T> {
    let at = base.checked_add(u64::from(off))?;
    // SAFETY: `bpf_probe_read_kernel` copies through the kernel's fault
    // handling: a bad address is an error, never a fault.
    unsafe { bpf_probe_read_kernel(at as *const T) }.ok()
}

/// The device (`MKDEV` of its superblock's `s_dev`) and inode number of
/// the file `current` now runs: `current->mm->exe_file->f_inode`.
#[inline(always)]
fn exe_file_id() -> Option<(u32, u64)> {
    let o = EXEC_FILE.get(0)?;
    if o.enabled == 0 {
        return None;
    }
    // SAFETY: no arguments; returns the current task's address.
    let task = unsafe { bpf_get_current_task() };
    let mm: u64 = kread(task, o.task_mm)?;
    let file: u64 = kread(mm, o.mm_exe_file)?;
    let inode: u64 = kread(file, o.file_inode)?;
    let ino: u64 = kread(inode, o.inode_ino)?;
    let sb: u64 = kread(inode, o.inode_sb)?;
    let dev: u32 = kread(sb, o.sb_dev)?;
    (mm != 0 && file != 0 && inode != 0 && sb != 0).then_some((dev, ino))
}

/// Whether `grant` is a fresh bypass verdict for the file `current` now
/// runs.
#[inline(always)]
fn grant_applies(g: &ExecGrant, now: u64) -> bool {
    g.bypass == 1
        && now.wrapping_sub(g.written_ns) < GRANT_WINDOW_NS
        && exe_file_id() == Some((g.dev, g.ino))
}

/// The settings, if the hooks are on and the socket is in sluice's
/// network namespace.
#[inline(always)]
fn config(ctx: *mut core::ffi::c_void) -> Option<SockConfig> {
    let cfg = *maps::SOCK_CONFIG.get(0)?;
    if cfg.enabled == 0 {
        return None;
    }
    // SAFETY: `ctx` is the program's context, as the helper requires.
    let netns = unsafe { bpf_get_netns_cookie(ctx) };
    (netns == cfg.netns_cookie).then_some(cfg)
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// `cgroup/sock_create`.
pub(crate) fn sock_create(ctx: &SockContext) -> i32 {
    let Some(cfg) = config(ctx.sock.cast()) else {
        return ALLOW;
    };
    // SAFETY: `ctx.sock` is the context; `family` is readable in this hook.
    let family = unsafe { (*ctx.sock).family };
    if family != AF_INET && family != AF_INET6 {
        return ALLOW;
    }
    if maps::PROCESSES.get_ptr(current_tgid()).is_some() {
        // SAFETY: `mark` is writable in `sock_create` (the socket is not
        // visible to anyone else yet).
        unsafe { (*ctx.sock).mark = cfg.mark };
        maps::count_sock(SockCounter::SocketMarked);
    }
    ALLOW
}

/// `cgroup/sock_release`.
pub(crate) fn sock_release(ctx: &SockContext) -> i32 {
    // SAFETY: the helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    let _ = maps::FLOWS.remove(&cookie);
    ALLOW
}

/// `cgroup/connect4` and `cgroup/connect6`.
pub(crate) fn connect(ctx: &SockAddrContext, v6: bool) -> i32 {
    let raw = ctx.sock_addr;
    let Some(cfg) = config(raw.cast()) else {
        return ALLOW;
    };
    let tgid = current_tgid();
    let mut flow = FlowEntry {
        tgid,
        uid: bpf_get_current_uid_gid() as u32,
        family: if v6 { 6 } else { 4 },
        ..FlowEntry::default()
    };
    // SAFETY: `raw` is the context; these fields are readable (4-byte
    // loads at constant offsets) in connect hooks.
    unsafe {
        flow.protocol = (*raw).protocol as u8;
        flow.dport = u16::from_be((*raw).user_port as u16);
        if v6 {
            for i in 0..4 {
                let w = (*raw).user_ip6[i].to_ne_bytes();
                flow.dst[i * 4..i * 4 + 4].copy_from_slice(&w);
            }
        } else {
            flow.dst[..4].copy_from_slice(&(*raw).user_ip4.to_ne_bytes());
        }
    }
    let verdict = if let Some(p) = maps::PROCESSES.get_ptr(tgid) {
        // SAFETY: a pointer from a successful lookup.
        let reason = unsafe { (*p).reason };
        maps::count_sock(SockCounter::ConnectBypassProcess);
        FlowVerdict::from_u32(reason).unwrap_or(FlowVerdict::BypassProcess)
    } else {
        match destination_bypass(&flow.dst, v6) {
            Some(e) => {
                maps::count_sock(SockCounter::ConnectBypassDestination);
                FlowVerdict::for_source(e.source)
            }
            None => {
                maps::count_sock(SockCounter::ConnectTunnel);
                FlowVerdict::Tunnel
            }
        }
    };
    // A tunnelled connection gets mark 0: a UDP socket connected before to
    // a bypassed destination must not keep that route.
    let mut mark: u32 = if verdict == FlowVerdict::Tunnel {
        0
    } else {
        cfg.mark
    };
    // SAFETY: `raw` is the context; SO_MARK takes a 4-byte int, `mark`
    // lives across the call.
    let rc = unsafe { bpf_setsockopt(raw.cast(), SOL_SOCKET, SO_MARK, (&raw mut mark).cast(), 4) };
    if rc != 0 {
        // Neither set nor cleared: where the connection would go is not
        // known, so it does not happen.
        maps::count_sock(SockCounter::MarkFailed);
        return REFUSE;
    }
    flow.verdict = verdict as u32;
    if let Ok(comm) = bpf_get_current_comm() {
        flow.comm = comm;
    }
    // SAFETY: the helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(raw.cast()) };
    let _ = maps::FLOWS.insert(&cookie, &flow, 0);
    ALLOW
}

/// The bypass-trie entry of a destination (network byte order, IPv4 in
/// the first four bytes unless `v6`; an IPv4-mapped IPv6 address is looked
/// up as IPv4, as the kernel will send it).
#[inline(always)]
fn destination_bypass(dst: &[u8; 16], v6: bool) -> Option<BypassEntry> {
    let mapped = v6 && dst[..10] == [0; 10] && dst[10] == 0xff && dst[11] == 0xff;
    if v6 && !mapped {
        maps::bypass_v6(dst).copied()
    } else {
        let o = if mapped { 12 } else { 0 };
        let k = [dst[o], dst[o + 1], dst[o + 2], dst[o + 3]];
        maps::bypass_v4(&k).copied()
    }
}

/// `cgroup/sendmsg4` and `cgroup/sendmsg6` (unconnected sends only).
pub(crate) fn sendmsg(ctx: &SockAddrContext, v6: bool) -> i32 {
    let raw = ctx.sock_addr;
    let Some(cfg) = config(raw.cast()) else {
        return ALLOW;
    };
    let mut mark: u32 = 0;
    // SAFETY: `raw` is the context; `mark` is a live 4-byte local.
    let rc = unsafe { bpf_getsockopt(raw.cast(), SOL_SOCKET, SO_MARK, (&raw mut mark).cast(), 4) };
    if rc != 0 {
        maps::count_sock(SockCounter::SendRefused);
        return REFUSE;
    }
    if mark != cfg.mark || maps::PROCESSES.get_ptr(current_tgid()).is_some() {
        return ALLOW;
    }
    let mut dst = [0u8; 16];
    // SAFETY: `raw` is the context; 4-byte loads at constant offsets.
    unsafe {
        if v6 {
            for i in 0..4 {
                let w = (*raw).user_ip6[i].to_ne_bytes();
                dst[i * 4..i * 4 + 4].copy_from_slice(&w);
            }
        } else {
            dst[..4].copy_from_slice(&(*raw).user_ip4.to_ne_bytes());
        }
    }
    if destination_bypass(&dst, v6).is_some() {
        ALLOW
    } else {
        maps::count_sock(SockCounter::SendRefused);
        REFUSE
    }
}

/// Tracepoint `sched/sched_process_exec`: `current` runs the new program.
/// Applies the verdict written for this exec if it is fresh and for this
/// file; otherwise (none, one left by an exec that failed, or one for
/// another file) the process is tunnelled.
pub(crate) fn process_exec(ctx: &TracePointContext) -> u32 {
    let Some(cfg) = maps::SOCK_CONFIG.get(0) else {
        return 0;
    };
    if cfg.enabled == 0 {
        return 0;
    }
    let tgid = current_tgid();
    // A non-leader thread that execs takes the group's id: its old id's
    // entry (made when it was cloned) goes.
    // SAFETY: the offset is inside the record (checked at start).
    if let Ok(old) = unsafe { ctx.read_at::<i32>(EXEC_OLD_PID_OFFSET as usize) }
        && old as u32 != tgid
    {
        let _ = maps::PROCESSES.remove(&(old as u32));
    }
    let grant = maps::PENDING.get_ptr(tgid).map(|g| {
        // SAFETY: a pointer from a successful lookup.
        unsafe { *g }
    });
    let _ = maps::PENDING.remove(&tgid);
    // SAFETY: no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if grant.is_some_and(|g| grant_applies(&g, now)) {
        let entry = ProcessEntry {
            reason: FlowVerdict::BypassProcess as u32,
            reserved: 0,
        };
        if maps::PROCESSES.insert(&tgid, &entry, 0).is_ok() {
            maps::count_sock(SockCounter::ExecBypass);
            return 0;
        }
        maps::count_sock(SockCounter::ForkMapFull);
    }
    let _ = maps::PROCESSES.remove(&tgid);
    maps::count_sock(SockCounter::ExecTunnel);
    0
}

/// Tracepoint `sched/sched_process_fork`: `current` is the parent.
pub(crate) fn process_fork(ctx: &TracePointContext) -> u32 {
    let Some(cfg) = maps::SOCK_CONFIG.get(0) else {
        return 0;
    };
    if cfg.enabled == 0 {
        return 0;
    }
    let Some(parent) = maps::PROCESSES.get_ptr(current_tgid()) else {
        return 0;
    };
    // SAFETY: a pointer from a successful lookup.
    let entry: ProcessEntry = unsafe { *parent };
    // The verifier wants constant offsets into the context: one branch per
    // known record layout (user space checked the offset at start).
    // SAFETY: both offsets are inside the record for their layout.
    let child: Result<i32, i32> = unsafe {
        match cfg.fork_child_pid_offset {
            20 => ctx.read_at::<i32>(20),
            44 => ctx.read_at::<i32>(44),
            _ => return 0,
        }
    };
    let Ok(child) = child else {
        return 0;
    };
    if maps::PROCESSES.insert(&(child as u32), &entry, 0).is_ok() {
        maps::count_sock(SockCounter::ForkInherited);
    } else {
        maps::count_sock(SockCounter::ForkMapFull);
    }
    0
}

/// Tracepoint `sched/sched_process_exit`: `current` is the exiting task.
/// Its thread id is the key a fork gave it (the thread group's for a
/// process's main thread).
pub(crate) fn process_exit(_ctx: &TracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = maps::PROCESSES.remove(&tid);
    // A verdict for an exec that failed goes with its process.
    let _ = maps::PENDING.remove(&tid);
    0
}
