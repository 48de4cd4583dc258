//! Endpoint mode's process tracepoints: which processes are listed in
//! [`maps::PROCESSES`] (their sockets bypass the tunnel, see
//! [`crate::sock`]).
//!
//! - tracepoints `sched_process_fork` / `sched_process_exit`: a child starts
//!   with its parent's entry (before it runs), an exiting task's entry goes.
//! - tracepoint `sched_process_exec`: a successful `execve` applies the
//!   verdict user space wrote for it while the kernel held the exec (a
//!   fanotify permission event), if it is fresh and names the file the
//!   process now runs (device and inode of `current->mm->exe_file`, found
//!   through [`maps::EXEC_FILE`]'s offsets); without one (an exec sluice did not
//!   see) the process is tunnelled. A verdict for an exec that then failed
//!   is never applied to the program that keeps running, nor to another
//!   file the process executes next (a `memfd` sluice never sees).
//!
//! A tracepoint cannot refuse: a process that cannot be listed (a full
//! map) is tunnelled, the safe direction.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{bpf_get_current_task, bpf_ktime_get_ns},
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use sluice_common::{
    EXEC_OLD_PID_OFFSET, ExecGrant, FlowVerdict, GRANT_WINDOW_NS, ProcessEntry, SockCounter,
};

use crate::maps;

/// Endpoint mode: a successful exec applies its verdict
/// ([`sluice_common::sock_programs::PROCESS_EXEC`]).
#[tracepoint]
pub fn process_exec(ctx: TracePointContext) -> u32 {
    exec(&ctx)
}

/// Endpoint mode: a child inherits its parent's bypass
/// ([`sluice_common::sock_programs::PROCESS_FORK`]).
#[tracepoint]
pub fn process_fork(ctx: TracePointContext) -> u32 {
    fork(&ctx)
}

/// Endpoint mode: an exiting task's bypass entry goes
/// ([`sluice_common::sock_programs::PROCESS_EXIT`]).
#[tracepoint]
pub fn process_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx)
}

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
    let o = maps::EXEC_FILE.get(0)?;
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

/// The thread group id of `current`.
#[inline(always)]
pub(crate) fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Tracepoint `sched/sched_process_exec`: `current` runs the new program.
/// Applies the verdict written for this exec if it is fresh and for this
/// file; otherwise (none, one left by an exec that failed, or one for
/// another file) the process is tunnelled.
fn exec(ctx: &TracePointContext) -> u32 {
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
fn fork(ctx: &TracePointContext) -> u32 {
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
fn exit(_ctx: &TracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = maps::PROCESSES.remove(&tid);
    // A verdict for an exec that failed goes with its process.
    let _ = maps::PENDING.remove(&tid);
    0
}
