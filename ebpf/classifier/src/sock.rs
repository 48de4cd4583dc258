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
//! - `cgroup/sock_release`: the socket's flow entry goes.
//! - tracepoints `sched_process_fork` / `sched_process_exit`: a child starts
//!   with its parent's entry (before it runs), an exiting task's entry goes.
//!   Entries for new executables are written by user space while the
//!   kernel holds the `execve` (a fanotify permission event), so no window
//!   exists where a listed program runs without its entry.
//!
//! Unconnected sends (`sendto` on a UDP socket) are not marked by
//! destination: the kernel reads the socket's mark for a datagram before
//! the sendmsg hook runs, so a mark set there would apply to the next
//! datagram, whatever its destination. They follow the process mark and
//! the routing table (configured prefixes are also `throw` routes).
//!
//! Every hook allows the operation (returns 1): they steer, never refuse.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_setsockopt},
    },
    programs::{SockAddrContext, SockContext, TracePointContext},
};
use sluice_common::{FlowEntry, FlowVerdict, ProcessEntry, SockConfig, SockCounter};

use crate::maps;

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const SOL_SOCKET: i32 = 1;
const SO_MARK: i32 = 36;
/// The hooks' "allow" return value.
const ALLOW: i32 = 1;

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
        let entry = if v6 {
            let mut k = [0u8; 16];
            k.copy_from_slice(&flow.dst);
            maps::bypass_v6(&k).copied()
        } else {
            let mut k = [0u8; 4];
            k.copy_from_slice(&flow.dst[..4]);
            maps::bypass_v4(&k).copied()
        };
        match entry {
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
        maps::count_sock(SockCounter::MarkFailed);
        if verdict != FlowVerdict::Tunnel {
            // The mark did not stick: the connection goes through the
            // tunnel, and the table says so.
            flow.verdict = FlowVerdict::Tunnel as u32;
        }
    } else {
        flow.verdict = verdict as u32;
    }
    if let Ok(comm) = bpf_get_current_comm() {
        flow.comm = comm;
    }
    // SAFETY: the helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(raw.cast()) };
    let _ = maps::FLOWS.insert(&cookie, &flow, 0);
    ALLOW
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
    0
}
