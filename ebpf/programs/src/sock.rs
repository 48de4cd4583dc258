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
//!
//! Which processes are listed is kept by the process tracepoints
//! ([`crate::process`]).
//!
//! The hooks steer; they refuse only where steering is impossible (a mark
//! that cannot be set or cleared, a send that the mark would leak).
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_uid_gid,
        generated::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_getsockopt, bpf_setsockopt},
    },
    macros::{cgroup_sock, cgroup_sock_addr},
    programs::{SockAddrContext, SockContext},
};
use sluice_common::{BypassEntry, FlowEntry, FlowVerdict, SockConfig, SockCounter};

use crate::{maps, process::current_tgid};

/// Endpoint mode: marks the sockets of bypassed processes
/// ([`sluice_common::sock_programs::SOCK_CREATE`]).
#[cgroup_sock(sock_create)]
pub fn sock_create(ctx: SockContext) -> i32 {
    create(&ctx)
}

/// Endpoint mode: forgets a released socket's flow
/// ([`sluice_common::sock_programs::SOCK_RELEASE`]).
#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    release(&ctx)
}

/// Endpoint mode: IPv4 destination bypass and flow table
/// ([`sluice_common::sock_programs::CONNECT4`]).
#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    connect(&ctx, false)
}

/// Endpoint mode: IPv6 destination bypass and flow table
/// ([`sluice_common::sock_programs::CONNECT6`]).
#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    connect(&ctx, true)
}

/// Endpoint mode: unconnected IPv4 sends of marked sockets
/// ([`sluice_common::sock_programs::SENDMSG4`]).
#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    sendmsg(&ctx, false)
}

/// Endpoint mode: unconnected IPv6 sends of marked sockets
/// ([`sluice_common::sock_programs::SENDMSG6`]).
#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    sendmsg(&ctx, true)
}

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const SOL_SOCKET: i32 = 1;
const SO_MARK: i32 = 36;
/// The hooks' "allow" return value.
const ALLOW: i32 = 1;
/// The hooks' "refuse" return value (the syscall fails with `EPERM`).
const REFUSE: i32 = 0;

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

/// `cgroup/sock_create`.
fn create(ctx: &SockContext) -> i32 {
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
fn release(ctx: &SockContext) -> i32 {
    // SAFETY: the helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    let _ = maps::FLOWS.remove(&cookie);
    ALLOW
}

/// `cgroup/connect4` and `cgroup/connect6`.
fn connect(ctx: &SockAddrContext, v6: bool) -> i32 {
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
fn sendmsg(ctx: &SockAddrContext, v6: bool) -> i32 {
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
