//! Real-kernel tests of `sluice_sys::xsk` on a veth pair in a private
//! network namespace (root only; see `lab-network.md` for the rules).
//!
//! - TX: frames written to the `AF_XDP` TX ring on `xa` arrive, byte for
//!   byte, on an `AF_PACKET` socket on its peer `xb`.
//! - RX: a hand-assembled XDP program on `xa` redirects into an XSKMAP
//!   holding the socket; frames sent from `xb` with `AF_PACKET` arrive,
//!   byte for byte, in the RX ring.
//!
//! Frames carry the IEEE local experimental ethertype, no IP at all; counts
//! and time are bounded; namespaces are deleted on every exit path.

use std::{
    collections::HashSet,
    os::fd::{AsFd as _, AsRawFd as _},
    time::{Duration, Instant},
};

use sluice_sys::xsk::{BindMode, SetupStep, XskConfig, XskError, XskSocket};

/// IEEE 802 local experimental ethertype 1.
const ETHERTYPE: u16 = 0x88b5;
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
/// Frames per test.
const FRAMES: u32 = 1000;
/// Whole-test time bound.
const DEADLINE: Duration = Duration::from_secs(20);

/// Frame `seq`: `dst`, `src`, our ethertype, `seq` (big endian), then a
/// pattern; 60 to 1514 bytes long depending on `seq`.
fn frame(seq: u32, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let len = 60 + (seq as usize * 37) % (1514 - 60 + 1);
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend((f.len()..len).map(|i| (i as u32 ^ seq.wrapping_mul(31)) as u8));
    f
}

/// The sequence number of one of our frames, or `None` for other traffic.
fn seq_of(f: &[u8]) -> Option<u32> {
    if f.len() < 18 || f[12..14] != ETHERTYPE.to_be_bytes() {
        return None;
    }
    Some(u32::from_be_bytes(f[14..18].try_into().expect("4 bytes")))
}

/// Checks `f` against what frame `seq` must be; records it once.
fn check(f: &[u8], dst: [u8; 6], src: [u8; 6], seen: &mut HashSet<u32>) -> bool {
    let Some(seq) = seq_of(f) else { return false };
    assert!(seq < FRAMES, "unknown sequence number {seq}");
    assert_eq!(f, frame(seq, dst, src).as_slice(), "frame {seq} differs");
    assert!(seen.insert(seq), "frame {seq} received twice");
    true
}

#[test]
fn tx_ring_reaches_the_peer() {
    if !sluice_lab::require_root("tx_ring_reaches_the_peer") {
        return;
    }
    let ns = lab::Netns::with_veth();
    let _inside = ns.enter();
    let peer = net::PacketSocket::open(net::ifindex("xb"), ETHERTYPE);
    let mut xsk =
        XskSocket::new("xa", 0, &XskConfig::default(), BindMode::Auto).expect("AF_XDP socket");
    assert!(
        !xsk.is_zero_copy(),
        "veth has no zero-copy: Auto must fall back to copy"
    );
    let tx_frames = xsk.free_frames();
    assert_eq!(tx_frames, 2048, "half of 4096 frames for TX");

    let deadline = Instant::now() + DEADLINE;
    let mut seen = HashSet::new();
    let mut next = 0;
    let mut buf = vec![0; 4096];
    while seen.len() < FRAMES as usize {
        assert!(
            Instant::now() < deadline,
            "timed out: {next} sent, {} received; {:?}, {:?}",
            seen.len(),
            xsk.counters(),
            xsk.statistics()
        );
        if next < FRAMES {
            let mut batch = xsk.tx(64);
            while next < FRAMES && batch.push(&frame(next, MAC_B, MAC_A)).is_ok() {
                next += 1;
            }
            batch.commit().expect("TX wakeup");
        }
        if xsk.tx_in_flight() > 0 {
            xsk.kick_tx().expect("TX wakeup");
        }
        let mut got = false;
        while let Some(len) = peer.recv(&mut buf) {
            got |= check(&buf[..len], MAC_B, MAC_A, &mut seen);
        }
        if !got {
            net::wait(peer.fd.as_fd(), libc::POLLIN, 10);
        }
    }
    // Every frame comes back through the completion ring.
    while xsk.free_frames() < tx_frames {
        assert!(
            Instant::now() < deadline,
            "frames not completed: {:?}",
            xsk.counters()
        );
        if xsk.complete() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let c = xsk.counters();
    assert_eq!(
        (c.tx_packets, c.tx_completed),
        (u64::from(FRAMES), u64::from(FRAMES))
    );
    assert!(c.tx_wakeups > 0, "copy mode needs sendto to transmit");
    let stats = xsk.statistics().expect("XDP_STATISTICS");
    assert_eq!(stats.tx_invalid_descs, 0, "{stats:?}");
}

#[test]
fn rx_ring_gets_redirected_frames() {
    if !sluice_lab::require_root("rx_ring_gets_redirected_frames") {
        return;
    }
    let ns = lab::Netns::with_veth();
    let _inside = ns.enter();
    let xa = net::ifindex("xa");
    let config = XskConfig {
        frame_size: 2048,
        ..XskConfig::default()
    };
    let mut xsk = XskSocket::new(xa, 0, &config, BindMode::Copy).expect("AF_XDP socket");
    let map = bpf::xskmap(1);
    bpf::map_set(map.as_fd(), 0, xsk.as_raw_fd());
    let prog = bpf::redirect_prog(map.as_fd());
    let _link = bpf::xdp_link(prog.as_fd(), xa);
    let sender = net::PacketSocket::open(net::ifindex("xb"), 0);

    let deadline = Instant::now() + DEADLINE;
    let mut seen = HashSet::new();
    let mut others = 0;
    let mut sent = 0;
    // Bursts well under veth's 256-entry XDP queue, so none is dropped.
    while sent < FRAMES {
        let burst = (sent + 32).min(FRAMES);
        for seq in sent..burst {
            sender.send(&frame(seq, MAC_A, MAC_B));
        }
        sent = burst;
        while seen.len() < sent as usize {
            assert!(
                Instant::now() < deadline,
                "timed out: {sent} sent, {} received; {:?}, {:?}",
                seen.len(),
                xsk.counters(),
                xsk.statistics()
            );
            if !xsk.has_rx() {
                net::wait(xsk.as_fd(), libc::POLLIN, 10);
            }
            let batch = xsk.rx(64);
            for f in &batch {
                if !check(f, MAC_A, MAC_B, &mut seen) {
                    others += 1;
                }
            }
        }
    }
    let c = xsk.counters();
    assert_eq!(c.rx_packets, u64::from(FRAMES) + others);
    assert_eq!(
        xsk.free_frames(),
        2048,
        "RX frames went back to the fill ring, not the free list"
    );
    let stats = xsk.statistics().expect("XDP_STATISTICS");
    assert_eq!((stats.rx_dropped, stats.rx_ring_full), (0, 0), "{stats:?}");
}

#[test]
fn setup_errors_name_the_step() {
    if !sluice_lab::require_root("setup_errors_name_the_step") {
        return;
    }
    let ns = lab::Netns::with_veth();
    let _inside = ns.enter();
    let config = XskConfig::default();

    let err =
        XskSocket::new("xa", 0, &config, BindMode::ZeroCopy).expect_err("veth has no zero-copy");
    assert_eq!(err.step(), Some(SetupStep::Bind), "{err}");
    assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP), "{err}");

    let err = XskSocket::new("xa", 7, &config, BindMode::Copy).expect_err("veth has one queue");
    assert_eq!(err.step(), Some(SetupStep::Bind), "{err}");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");

    let err =
        XskSocket::new("slx-none", 0, &config, BindMode::Copy).expect_err("no such interface");
    assert!(matches!(err, XskError::Interface { .. }), "{err}");
    assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");

    let err = XskSocket::new(
        "xa",
        0,
        &XskConfig {
            frame_size: 1000,
            ..config
        },
        BindMode::Copy,
    )
    .expect_err("bad frame size");
    assert!(
        matches!(
            err,
            XskError::Config {
                field: "frame_size",
                ..
            }
        ),
        "{err}"
    );

    // A queue holds one socket...
    let xsk = XskSocket::new("xa", 0, &config, BindMode::Copy).expect("AF_XDP socket");
    let err = XskSocket::new("xa", 0, &config, BindMode::Copy).expect_err("queue taken");
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
    drop(xsk);
    // ...and is free again (after the kernel's deferred release, which
    // `new` waits out) once it is dropped, every time.
    for _ in 0..5 {
        let xsk = XskSocket::new("xa", 0, &config, BindMode::Copy).expect("AF_XDP socket");
        drop(xsk);
    }
}

/// Network namespaces for one test.
mod lab {
    use std::{
        fs::File,
        os::fd::AsRawFd as _,
        process::Command,
        sync::atomic::{AtomicU32, Ordering},
    };

    /// A namespace `slx-<pid>-<n>` with a veth pair `xa` (`MAC_A`) / `xb`
    /// (`MAC_B`), both up. Deleted on drop, panics included.
    pub(crate) struct Netns {
        name: String,
    }

    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    impl Netns {
        pub(crate) fn with_veth() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let name = format!(
                "slx-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            ip(&["netns", "add", &name]);
            // From here on, `drop` cleans up whatever fails next.
            let ns = Self { name };
            let n = ns.name.as_str();
            ip(&[
                "-n",
                n,
                "link",
                "add",
                "xa",
                "address",
                "02:00:00:00:00:0a",
                "type",
                "veth",
                "peer",
                "name",
                "xb",
                "address",
                "02:00:00:00:00:0b",
            ]);
            ip(&["-n", n, "link", "set", "xa", "up"]);
            ip(&["-n", n, "link", "set", "xb", "up"]);
            ns
        }

        /// Moves the calling thread into the namespace until the returned
        /// guard drops.
        pub(crate) fn enter(&self) -> Entered {
            let orig = File::open("/proc/thread-self/ns/net").expect("current netns");
            let target = File::open(format!("/run/netns/{}", self.name)).expect("test netns");
            // SAFETY: both are namespace fds we hold open; `setns` only
            // changes this thread's network namespace.
            let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            Entered { orig }
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let out = Command::new("ip")
                .args(["netns", "delete", &self.name])
                .output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "ip netns delete {}: {}",
                    self.name,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => eprintln!("ip netns delete {}: {e}", self.name),
            }
        }
    }

    /// The calling thread is inside a test namespace; back out on drop.
    pub(crate) struct Entered {
        orig: File,
    }

    impl Drop for Entered {
        fn drop(&mut self) {
            // SAFETY: as in `enter`.
            let rc = unsafe { libc::setns(self.orig.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                eprintln!("setns back: {}", std::io::Error::last_os_error());
            }
        }
    }
}

/// `AF_PACKET` sockets and `poll`.
mod net {
    use std::{
        ffi::CString,
        io, mem,
        os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    };

    /// The index of `name` in the calling thread's namespace.
    pub(crate) fn ifindex(name: &str) -> u32 {
        let c = CString::new(name).expect("name");
        // SAFETY: a valid C string for the call.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        assert_ne!(index, 0, "{name}: {}", io::Error::last_os_error());
        index
    }

    /// Waits up to `ms` for `events` on `fd`.
    pub(crate) fn wait(fd: BorrowedFd<'_>, events: libc::c_short, ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid `pollfd`, for the call only.
        unsafe { libc::poll(&raw mut p, 1, ms) > 0 }
    }

    /// A raw, non-blocking `AF_PACKET` socket bound to one interface.
    pub(crate) struct PacketSocket {
        pub(crate) fd: OwnedFd,
        ifindex: u32,
    }

    impl PacketSocket {
        /// Receives frames of `ethertype` (none if 0; then send-only).
        pub(crate) fn open(ifindex: u32, ethertype: u16) -> Self {
            let proto = ethertype.to_be();
            // SAFETY: creates a descriptor; no pointers.
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    libc::c_int::from(proto),
                )
            };
            assert!(raw >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
            // SAFETY: a fresh descriptor nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let addr = Self::addr(ifindex, proto, [0; 6]);
            // SAFETY: a valid `sockaddr_ll` of the length given.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&raw const addr).cast(),
                    mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "bind AF_PACKET: {}", io::Error::last_os_error());
            let size: libc::c_int = 8 << 20;
            // SAFETY: an `int` option of the right size.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&raw const size).cast(),
                    mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            Self { fd, ifindex }
        }

        fn addr(ifindex: u32, proto: u16, mac: [u8; 6]) -> libc::sockaddr_ll {
            let mut sll_addr = [0; 8];
            sll_addr[..6].copy_from_slice(&mac);
            libc::sockaddr_ll {
                sll_family: libc::AF_PACKET as u16,
                sll_protocol: proto,
                sll_ifindex: ifindex as i32,
                sll_hatype: 0,
                sll_pkttype: 0,
                sll_halen: 6,
                sll_addr,
            }
        }

        /// Sends one whole Ethernet frame.
        pub(crate) fn send(&self, frame: &[u8]) {
            let dst: [u8; 6] = frame[..6].try_into().expect("MAC");
            let addr = Self::addr(
                self.ifindex,
                u16::from_be_bytes([frame[12], frame[13]]).to_be(),
                dst,
            );
            for _ in 0..1000 {
                // SAFETY: `frame` and `addr` are valid for the call.
                let n = unsafe {
                    libc::sendto(
                        self.fd.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&raw const addr).cast(),
                        mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    )
                };
                if n == frame.len() as isize {
                    return;
                }
                let err = io::Error::last_os_error();
                assert_eq!(
                    err.kind(),
                    io::ErrorKind::WouldBlock,
                    "AF_PACKET send: {err}"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            panic!("AF_PACKET send: still blocked after 1 s");
        }

        /// One incoming frame, if any is waiting.
        pub(crate) fn recv(&self, buf: &mut [u8]) -> Option<usize> {
            loop {
                // SAFETY: all-zero is a valid `sockaddr_ll`.
                let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
                let mut len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: `buf`, `from` and `len` are valid for the call; the
                // kernel writes at most their sizes.
                let n = unsafe {
                    libc::recvfrom(
                        self.fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_TRUNC,
                        (&raw mut from).cast(),
                        &raw mut len,
                    )
                };
                if n < 0 {
                    let err = io::Error::last_os_error();
                    assert_eq!(
                        err.kind(),
                        io::ErrorKind::WouldBlock,
                        "AF_PACKET recv: {err}"
                    );
                    return None;
                }
                assert!(n as usize <= buf.len(), "frame of {n} bytes truncated");
                // PACKET_OUTGOING: our own transmissions looped back.
                if from.sll_pkttype != 4 {
                    return Some(n as usize);
                }
            }
        }
    }
}

/// Just enough of `bpf(2)` for an XSKMAP and a redirecting XDP program.
mod bpf {
    use std::{
        io, mem,
        os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    };

    const BPF_MAP_CREATE: libc::c_int = 0;
    const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
    const BPF_PROG_LOAD: libc::c_int = 5;
    const BPF_LINK_CREATE: libc::c_int = 28;
    const BPF_MAP_TYPE_XSKMAP: u32 = 17;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_XDP: u32 = 37;
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    const BPF_PSEUDO_MAP_FD: u8 = 1;
    const XDP_PASS: i32 = 2;
    const BPF_FUNC_REDIRECT_MAP: i32 = 51;

    /// `bpf_attr` for `BPF_MAP_CREATE` (the fields we use).
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }

    /// `bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
    #[repr(C)]
    struct MapUpdate {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }

    /// `bpf_attr` for `BPF_PROG_LOAD` (up to `expected_attach_type`).
    #[repr(C)]
    struct ProgLoad {
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

    /// `bpf_attr` for `BPF_LINK_CREATE` (the common head).
    #[repr(C)]
    struct LinkCreate {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
    }

    /// `struct bpf_insn`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Insn {
        code: u8,
        /// dst in the low nibble, src in the high one.
        regs: u8,
        off: i16,
        imm: i32,
    }

    const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        }
    }

    fn sys_bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
        // SAFETY: `attr` is a valid `bpf_attr` prefix for `cmd` of the size
        // given; the kernel reads (and for some commands writes) only that.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                (&raw mut *attr).cast::<u8>(),
                mem::size_of::<T>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc)
    }

    fn owned(fd: libc::c_long) -> OwnedFd {
        // SAFETY: a fresh descriptor returned by `bpf(2)`, owned by nobody.
        unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
    }

    /// An XSKMAP of `entries` queues.
    pub(crate) fn xskmap(entries: u32) -> OwnedFd {
        let mut attr = MapCreate {
            map_type: BPF_MAP_TYPE_XSKMAP,
            key_size: 4,
            value_size: 4,
            max_entries: entries,
            map_flags: 0,
        };
        owned(sys_bpf(BPF_MAP_CREATE, &mut attr).expect("BPF_MAP_CREATE XSKMAP"))
    }

    /// `map[key] = fd`.
    pub(crate) fn map_set(map: BorrowedFd<'_>, key: u32, fd: RawFd) {
        let value = fd as u32;
        let mut attr = MapUpdate {
            map_fd: map.as_raw_fd() as u32,
            _pad: 0,
            key: (&raw const key) as u64,
            value: (&raw const value) as u64,
            flags: 0,
        };
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).expect("BPF_MAP_UPDATE_ELEM");
    }

    /// `return bpf_redirect_map(&map, ctx->rx_queue_index, XDP_PASS);`
    pub(crate) fn redirect_prog(map: BorrowedFd<'_>) -> OwnedFd {
        let insns = [
            // r2 = *(u32 *)(r1 + 16): xdp_md.rx_queue_index
            insn(0x61, 2, 1, 16, 0),
            // r1 = map (ld_imm64, two slots)
            insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map.as_raw_fd()),
            insn(0, 0, 0, 0, 0),
            // r3 = XDP_PASS: the action when the slot is empty
            insn(0xb7, 3, 0, 0, XDP_PASS),
            // call bpf_redirect_map
            insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
            // exit (r0)
            insn(0x95, 0, 0, 0, 0),
        ];
        let license = c"Dual MIT/GPL";
        let mut log = vec![0u8; 64 << 10];
        let mut name = [0; 16];
        name[..12].copy_from_slice(b"slx_redirect");
        let mut attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 1,
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
            prog_ifindex: 0,
            expected_attach_type: 0,
        };
        match sys_bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(fd) => owned(fd),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                panic!(
                    "BPF_PROG_LOAD: {e}\n{}",
                    String::from_utf8_lossy(&log[..end])
                );
            }
        }
    }

    /// Attaches `prog` to `ifindex` in native (driver) mode; detached when
    /// the returned link is closed.
    pub(crate) fn xdp_link(prog: BorrowedFd<'_>, ifindex: u32) -> OwnedFd {
        let mut attr = LinkCreate {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: XDP_FLAGS_DRV_MODE,
        };
        owned(sys_bpf(BPF_LINK_CREATE, &mut attr).expect("BPF_LINK_CREATE XDP"))
    }
}
