//! Endpoint mode: the socket hooks and process tracepoints that decide,
//! in the kernel, which of the host's own sockets bypass the tunnel. The
//! hooks' settings ([`SockConfig`]), the bypassed processes
//! ([`ProcessEntry`]), the verdicts for execs in flight ([`ExecGrant`],
//! checked against the executed file through [`ExecFileOffsets`]), the
//! flow table ([`FlowEntry`], [`FlowVerdict`]) and the hooks' counters
//! ([`SockCounter`]).
use crate::policy::BypassEntry;

/// Capacity of [`crate::map_names::PROCESSES`].
pub const PROCESSES_MAX_ENTRIES: u32 = 65_536;
/// Capacity of [`crate::map_names::FLOWS`] (least recently used entries go first).
pub const FLOWS_MAX_ENTRIES: u32 = 16_384;
/// Offsets of `child_pid` in `sched_process_fork`'s record that the fork
/// hook can read (the verifier wants a constant offset into the context):
/// 20 since the comm fields became `__data_loc` strings, 44 before.
pub const FORK_CHILD_PID_OFFSETS: [u32; 2] = [20, 44];
/// Offset of `old_pid` in `sched_process_exec`'s record (after the
/// `__data_loc` file name and `pid`), checked against the format at start.
pub const EXEC_OLD_PID_OFFSET: u32 = 16;
/// How long a pending exec verdict stays valid: the exec it was written
/// for completes within microseconds of sluice's answer; an older one
/// belongs to an exec that failed.
pub const GRANT_WINDOW_NS: u64 = 100_000_000;
/// Capacity of [`crate::map_names::PENDING`].
pub const PENDING_MAX_ENTRIES: u32 = 8_192;

/// Settings of the socket hooks (endpoint mode), the single entry of
/// [`crate::map_names::SOCK_CONFIG`]. While `enabled` is 0 every hook does nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockConfig {
    /// Only sockets of this network namespace are looked at (the cookie of
    /// the namespace sluice runs in: its host's own traffic).
    pub netns_cookie: u64,
    /// The firewall mark that routes a socket's packets outside the
    /// tunnel (the endpoint's policy rules look it up in the main table).
    pub mark: u32,
    /// 1 when the hooks act, 0 otherwise.
    pub enabled: u32,
    /// Where `child_pid` is in `sched_process_fork`'s record, one of
    /// [`FORK_CHILD_PID_OFFSETS`] (read from the tracepoint's format).
    pub fork_child_pid_offset: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<SockConfig>() == 24);
const _: () = assert!(core::mem::align_of::<SockConfig>() == 8);
plain!(SockConfig {
    netns_cookie,
    mark,
    enabled,
    fork_child_pid_offset,
    reserved
});

/// Value of a [`crate::map_names::PROCESSES`] entry: why the process bypasses.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProcessEntry {
    /// [`FlowVerdict::BypassProcess`] or [`FlowVerdict::BypassSelf`], as
    /// `u32`.
    pub reason: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<ProcessEntry>() == 8);
const _: () = assert!(core::mem::align_of::<ProcessEntry>() == 4);
plain!(ProcessEntry { reason, reserved });

/// A verdict for an `execve` in flight ([`crate::map_names::PENDING`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExecGrant {
    /// 1: the new program bypasses; 0: it is tunnelled.
    pub bypass: u32,
    /// The device of the file the verdict is for, as the kernel numbers
    /// it (`MKDEV(major, minor)` of its superblock's `s_dev`: `major << 20
    /// | minor`). The exec tracepoint applies the verdict only to a process
    /// whose executable is that file ([`ExecFileOffsets`]).
    pub dev: u32,
    /// `CLOCK_MONOTONIC` when written, nanoseconds (`bpf_ktime_get_ns`'s
    /// clock).
    pub written_ns: u64,
    /// The inode number of that file.
    pub ino: u64,
}

const _: () = assert!(core::mem::size_of::<ExecGrant>() == 24);
const _: () = assert!(core::mem::align_of::<ExecGrant>() == 8);
plain!(ExecGrant {
    bypass,
    dev,
    written_ns,
    ino
});

/// Where the exec tracepoint finds the identity of the file a process now
/// runs, in the running kernel's layout (byte offsets read from its BTF by
/// user space; the programs are built without CO-RE relocations): it
/// follows `current->mm->exe_file->f_inode` to `i_ino` and
/// `i_sb->s_dev`. An exec verdict ([`ExecGrant`]) is applied only if they
/// are the verdict's `ino` and `dev`: a verdict for a file whose exec
/// failed cannot reach another file the same process then executes.
/// All zero (never written): no verdict applies, every exec is tunnelled.
/// The one entry of [`crate::map_names::EXEC_FILE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExecFileOffsets {
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `mm_struct.exe_file`.
    pub mm_exe_file: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `inode.i_ino`.
    pub inode_ino: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `super_block.s_dev`.
    pub sb_dev: u32,
    /// 1 once written.
    pub enabled: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<ExecFileOffsets>() == 32);
const _: () = assert!(core::mem::align_of::<ExecFileOffsets>() == 4);
plain!(ExecFileOffsets {
    task_mm,
    mm_exe_file,
    file_inode,
    inode_ino,
    inode_sb,
    sb_dev,
    enabled,
    reserved
});

/// What the connect hook decided for a connection, stored in
/// [`FlowEntry::verdict`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowVerdict {
    /// Through the tunnel.
    Tunnel = 0,
    /// Direct: the process is listed.
    BypassProcess = 1,
    /// Direct: sluice's own socket (its tunnel to the edge).
    BypassSelf = 2,
    /// Direct: the destination is in a configured bypass prefix.
    BypassPrefix = 3,
    /// Direct: the destination was answered for a bypassed domain.
    BypassDomain = 4,
    /// Direct: the destination is another VPN gateway.
    BypassVpnGateway = 5,
}

impl FlowVerdict {
    /// The verdict stored as `v`, if it is one.
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Tunnel,
            1 => Self::BypassProcess,
            2 => Self::BypassSelf,
            3 => Self::BypassPrefix,
            4 => Self::BypassDomain,
            5 => Self::BypassVpnGateway,
            _ => return None,
        })
    }

    /// The verdict for a destination found in the bypass trie with entry
    /// source `source` (`BypassEntry::SOURCE_*`).
    pub const fn for_source(source: u32) -> Self {
        match source {
            BypassEntry::SOURCE_DNS => Self::BypassDomain,
            BypassEntry::SOURCE_VPN_GATEWAY => Self::BypassVpnGateway,
            _ => Self::BypassPrefix,
        }
    }

    /// Short name for tables and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tunnel => "tunnel",
            Self::BypassProcess => "bypass:process",
            Self::BypassSelf => "bypass:sluice",
            Self::BypassPrefix => "bypass:prefix",
            Self::BypassDomain => "bypass:domain",
            Self::BypassVpnGateway => "bypass:vpn-gateway",
        }
    }
}

/// One connection in [`crate::map_names::FLOWS`], written by the connect hooks.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEntry {
    /// Destination address, network byte order (IPv4 in the first four
    /// bytes).
    pub dst: [u8; 16],
    /// The connecting process (thread group id).
    pub tgid: u32,
    /// Its user id.
    pub uid: u32,
    /// A [`FlowVerdict`] as `u32`.
    pub verdict: u32,
    /// Destination port, host byte order.
    pub dport: u16,
    /// 4 or 6.
    pub family: u8,
    /// IP protocol (6 TCP, 17 UDP, ...).
    pub protocol: u8,
    /// The task's command name at connect time (NUL-padded).
    pub comm: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<FlowEntry>() == 48);
const _: () = assert!(core::mem::align_of::<FlowEntry>() == 4);
plain!(FlowEntry {
    dst,
    tgid,
    uid,
    verdict,
    dport,
    family,
    protocol,
    comm
});

/// Indices into [`crate::map_names::SOCK_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockCounter {
    /// A socket of a listed process was created (and marked).
    SocketMarked = 0,
    /// A connect went direct because of its process.
    ConnectBypassProcess = 1,
    /// A connect went direct because of its destination.
    ConnectBypassDestination = 2,
    /// A connect went through the tunnel.
    ConnectTunnel = 3,
    /// A child inherited its parent's bypass.
    ForkInherited = 4,
    /// A child could not inherit (the process map is full): its sockets
    /// are tunnelled, the safe direction.
    ForkMapFull = 5,
    /// Setting a socket's mark failed: the connect was refused.
    MarkFailed = 6,
    /// A successful exec applied a bypass verdict.
    ExecBypass = 7,
    /// A successful exec left its process tunnelled (no verdict, a stale
    /// one, or "tunnel").
    ExecTunnel = 8,
    /// An unconnected send of a marked socket to a destination that must
    /// be tunnelled was refused.
    SendRefused = 9,
}

impl SockCounter {
    /// Number of counters.
    pub const COUNT: u32 = 10;
    /// All of them, in index order.
    pub const ALL: [SockCounter; Self::COUNT as usize] = [
        SockCounter::SocketMarked,
        SockCounter::ConnectBypassProcess,
        SockCounter::ConnectBypassDestination,
        SockCounter::ConnectTunnel,
        SockCounter::ForkInherited,
        SockCounter::ForkMapFull,
        SockCounter::MarkFailed,
        SockCounter::ExecBypass,
        SockCounter::ExecTunnel,
        SockCounter::SendRefused,
    ];

    /// Stable metric label.
    pub const fn name(self) -> &'static str {
        match self {
            SockCounter::SocketMarked => "socket_marked",
            SockCounter::ConnectBypassProcess => "connect_bypass_process",
            SockCounter::ConnectBypassDestination => "connect_bypass_destination",
            SockCounter::ConnectTunnel => "connect_tunnel",
            SockCounter::ForkInherited => "fork_inherited",
            SockCounter::ForkMapFull => "fork_map_full",
            SockCounter::MarkFailed => "mark_failed",
            SockCounter::ExecBypass => "exec_bypass",
            SockCounter::ExecTunnel => "exec_tunnel",
            SockCounter::SendRefused => "send_refused",
        }
    }
}

// The hooks' statistics array is indexed by these values: `ALL` lists
// every counter once, at its own index.
const _: () = {
    let mut i = 0;
    while i < SockCounter::ALL.len() {
        assert!(SockCounter::ALL[i] as usize == i);
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_verdicts_round_trip() {
        for v in 0..8 {
            if let Some(f) = FlowVerdict::from_u32(v) {
                assert_eq!(f as u32, v);
            }
        }
        assert_eq!(
            FlowVerdict::for_source(BypassEntry::SOURCE_DNS),
            FlowVerdict::BypassDomain
        );
    }
}
