//! Part of the lab benchmark: how endpoint mode should take the host's own
//! packets into the tunneler, measured. Two candidates, same sender, same
//! pinning, in a private network namespace (made with `unshare`, gone on
//! exit; only 198.18.0.0/15 addresses):
//!
//! - `tun`: a TUN device with a route into it; the reader does one
//!   `read(2)` per packet (what a TUN-based client does).
//! - `veth_af_xdp`: a veth pair with a route into it; sluice's XDP
//!   classifier on the far side redirects into an `AF_XDP` socket; the
//!   reader takes batches of 64 from the RX ring (what sluice's worker
//!   does).
//!
//! The sender (CPU 0) blasts UDP datagrams of 64 and 1400 bytes for
//! `--seconds` (default 3); the reader (CPU 1) counts what it gets. Prints
//! one JSON object per case and size: packets per second received.
// Report arithmetic: packet counts and microseconds far below 2^52.
#![allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]

use std::{
    net::UdpSocket,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use sluice_gateway::ebpf::{AttachMode, Programs};
use sluice_runtime::host;
use sluice_sys::{
    cpu::pin_current_thread,
    tun::Tun,
    xsk::{BindMode, XskConfig, XskSocket},
};

const DST: &str = "198.18.99.2:9";

/// CPU time (user + system) of the calling thread, microseconds.
fn thread_cpu_us() -> f64 {
    // SAFETY: getrusage fills a local struct.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &raw mut r) };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    tv(r.ru_utime) + tv(r.ru_stime)
}

/// Waits up to 10 ms for `fd` to be readable.
fn wait_readable(fd: std::os::fd::RawFd) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&raw mut p, 1, 10) };
}

fn sh(script: &str) -> Result<()> {
    host::run(&["ip", "-batch", "-"], Some(script))
        .map(|_| ())
        .map_err(Into::into)
}

/// Sends `size`-byte datagrams to [`DST`] until `stop`; returns the count.
fn sender(size: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, f64)> {
    std::thread::spawn(move || {
        let _ = pin_current_thread(0);
        let cpu0 = thread_cpu_us();
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let buf = vec![0x5au8; size];
        let mut n = 0u64;
        while !stop.load(Relaxed) {
            for _ in 0..64 {
                if s.send_to(&buf, DST).is_ok() {
                    n += 1;
                }
            }
        }
        (n, thread_cpu_us() - cpu0)
    })
}

/// What one case measured.
struct Measured {
    /// Packets the reader got, per second (millions).
    mpps: f64,
    /// Sender thread CPU per packet sent (its kernel path included), µs.
    sender_us: f64,
    /// Reader thread CPU per packet received, µs.
    reader_us: f64,
}

/// Runs the sender for `secs` while `read` (on CPU 1) counts packets into
/// `got` and returns its thread CPU time.
fn run(secs: u64, size: usize, read: impl FnOnce(&AtomicBool, &AtomicU64) + Send) -> Measured {
    let stop = Arc::new(AtomicBool::new(false));
    let got = AtomicU64::new(0);
    let reader_stop = AtomicBool::new(false);
    let reader_cpu = AtomicU64::new(0);
    let (mut sent, mut sender_cpu) = (0, 0.0);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let _ = pin_current_thread(1);
            let c0 = thread_cpu_us();
            read(&reader_stop, &got);
            reader_cpu.store((thread_cpu_us() - c0).to_bits(), Relaxed);
        });
        let s = sender(size, stop.clone());
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Relaxed);
        (sent, sender_cpu) = s.join().unwrap_or((0, 0.0));
        // Let the reader drain what is queued.
        std::thread::sleep(Duration::from_millis(200));
        reader_stop.store(true, Relaxed);
    });
    let n = got.load(Relaxed).max(1) as f64;
    Measured {
        mpps: n / secs as f64 / 1e6,
        sender_us: sender_cpu / sent.max(1) as f64,
        reader_us: f64::from_bits(reader_cpu.load(Relaxed)) / n,
    }
}

fn tun_case(secs: u64, size: usize) -> Result<Measured> {
    let tun = Tun::open("ingtun0").context("opening a TUN device")?;
    sh(
        "link set ingtun0 up\naddr add 198.18.98.1/24 dev ingtun0\nroute replace 198.18.99.0/24 dev ingtun0\n",
    )?;
    let r = run(secs, size, |stop, got| {
        let mut buf = vec![0u8; 2048];
        while !stop.load(Relaxed) {
            match tun.recv(&mut buf) {
                Ok(_) => {
                    got.fetch_add(1, Relaxed);
                }
                Err(_) => wait_readable(std::os::fd::AsRawFd::as_raw_fd(&tun)),
            }
        }
    });
    drop(tun);
    Ok(r)
}

fn veth_case(secs: u64, size: usize) -> Result<Measured> {
    sh(
        "link add ingv0 type veth peer name ingv0x\nlink set ingv0 up\nlink set ingv0x up\naddr add 198.18.97.1/24 dev ingv0\n",
    )?;
    sluice_sys::ethtool::set_tx_checksum("ingv0", false)?;
    let mac = sluice_core::wire::ethernet::mac_to_string(&host::mac("ingv0x")?);
    sh(&format!(
        "neigh replace 169.254.1.1 lladdr {mac} dev ingv0 nud permanent\nroute replace 198.18.99.0/24 via 169.254.1.1 dev ingv0 onlink\n"
    ))?;
    let mut c = Programs::load()?;
    c.set_local_addrs(&host::local_addrs()?)?;
    let mut xsk = XskSocket::new(
        host::ifindex("ingv0x")?,
        0,
        &XskConfig {
            meta_in_head: c.meta_in_head(),
            ..XskConfig::default()
        },
        BindMode::Auto,
    )?;
    c.register_socket(0, std::os::fd::AsFd::as_fd(&xsk))?;
    c.attach("ingv0x", AttachMode::Auto.for_driver(Some("veth")))?;
    let r = run(secs, size, move |stop, got| {
        while !stop.load(Relaxed) {
            let b = xsk.rx(64);
            let n = b.len();
            drop(b);
            if n == 0 {
                wait_readable(std::os::fd::AsRawFd::as_raw_fd(&xsk));
            } else {
                got.fetch_add(n as u64, Relaxed);
            }
        }
    });
    drop(c);
    sh("link del ingv0\n")?;
    Ok(r)
}

fn main() -> Result<()> {
    let secs = match std::env::args().skip_while(|a| a != "--seconds").nth(1) {
        Some(s) => s.parse().context("--seconds")?,
        None => 3,
    };
    // A private network namespace, and a private mount namespace whose
    // /sys shows it (interface lookups read sysfs).
    // SAFETY: single-threaded at this point; plain syscalls with valid C
    // strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) != 0 {
            bail!("unshare: {} (needs root)", std::io::Error::last_os_error());
        }
        let root = c"/";
        let sys = c"/sys";
        let sysfs = c"sysfs";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
            || libc::mount(
                sysfs.as_ptr(),
                sys.as_ptr(),
                sysfs.as_ptr(),
                0,
                std::ptr::null(),
            ) != 0
        {
            bail!("remounting /sys: {}", std::io::Error::last_os_error());
        }
    }
    sh("link set lo up\n")?;
    for size in [64usize, 1400] {
        for (case, f) in [
            ("tun", tun_case as fn(u64, usize) -> Result<Measured>),
            ("veth_af_xdp", veth_case),
        ] {
            let m = f(secs, size)?;
            println!(
                "{{\"case\":\"{case}\",\"size\":{size},\"received_mpps\":{:.3},\"sender_cpu_us_per_pkt\":{:.3},\"reader_cpu_us_per_pkt\":{:.3},\"total_cpu_us_per_pkt\":{:.3}}}",
                m.mpps,
                m.sender_us,
                m.reader_us,
                m.sender_us + m.reader_us
            );
        }
    }
    Ok(())
}
