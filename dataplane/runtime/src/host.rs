//! Facts about the host's interfaces and the few commands sluice runs to
//! configure the kernel (`ip`, `nft`), with errors that say which command
//! failed and what it printed. Control plane only: never on the packet
//! path.
use std::{
    net::IpAddr,
    path::Path,
    process::{Command, Stdio},
};

/// A host command or lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A command could not run or exited non-zero.
    #[error("`{cmd}` failed: {detail}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its stderr, or why it could not start.
        detail: String,
    },
    /// An interface does not exist or could not be read.
    #[error("interface {iface}: {detail}")]
    Interface {
        /// The interface name.
        iface: String,
        /// What went wrong.
        detail: String,
    },
}

/// Runs `argv`, feeding `stdin` if given; fails with its stderr.
pub fn run(argv: &[&str], stdin: Option<&str>) -> Result<String, HostError> {
    use std::io::Write as _;
    let cmd = argv.join(" ");
    let fail = |detail: String| HostError::Command {
        cmd: cmd.clone(),
        detail,
    };
    let mut cmd = Command::new(argv[0]);
    // Killed if this thread ends before it does (see `sys::spawn`).
    crate::sys::spawn::die_with_parent(&mut cmd);
    let mut child = cmd
        .args(&argv[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The interface's index, or an error naming it if it does not exist.
pub fn ifindex(iface: &str) -> Result<u32, HostError> {
    let p = format!("/sys/class/net/{iface}/ifindex");
    std::fs::read_to_string(&p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| HostError::Interface {
            iface: iface.into(),
            detail: "no such interface".into(),
        })
}

/// The interface's MAC address.
pub fn mac(iface: &str) -> Result<[u8; 6], HostError> {
    let p = format!("/sys/class/net/{iface}/address");
    let s = std::fs::read_to_string(&p).map_err(|e| HostError::Interface {
        iface: iface.into(),
        detail: e.to_string(),
    })?;
    parse_mac(s.trim()).ok_or_else(|| HostError::Interface {
        iface: iface.into(),
        detail: format!("unreadable MAC address `{}`", s.trim()),
    })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Number of RX queues of the interface (at least 1).
pub fn rx_queues(iface: &str) -> Result<u32, HostError> {
    let dir = format!("/sys/class/net/{iface}/queues");
    let n = std::fs::read_dir(Path::new(&dir))
        .map_err(|e| HostError::Interface {
            iface: iface.into(),
            detail: e.to_string(),
        })?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Ok(u32::try_from(n).unwrap_or(1).max(1))
}

/// True if the running kernel's release is at least `major.minor`
/// (`/proc/sys/kernel/osrelease`; false if it cannot be read).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|r| release_at_least(&r, major, minor))
        .unwrap_or(false)
}

fn release_at_least(release: &str, major: u32, minor: u32) -> Option<bool> {
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    let (a, b) = (it.next()?.ok()?, it.next()?.ok()?);
    Some((a, b) >= (major, minor))
}

/// Where bpffs is mounted by default.
pub const BPFFS: &str = sluice_config::DEFAULT_BPFFS;

/// Makes sure a bpffs is mounted at `dir`. Mounts one at [`BPFFS`] if
/// missing (with a warning: a bpffs mounted only in this process's mount
/// namespace disappears with it); any other path must already be bpffs.
pub fn ensure_bpffs(dir: &Path) -> Result<(), HostError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let want = dir.to_string_lossy();
    if mounts.lines().any(|l| {
        let mut w = l.split_whitespace();
        w.nth(1) == Some(&*want) && w.next() == Some("bpf")
    }) {
        return Ok(());
    }
    if dir != Path::new(BPFFS) {
        return Err(HostError::Command {
            cmd: format!("bpffs at {want}"),
            detail: "not a bpffs mount (mount -t bpf bpf <dir>)".into(),
        });
    }
    log::warn!(
        "no bpffs at {want}: mounting one; if this process runs in a private mount namespace \
         (ip netns exec), pins will not outlive it: set gateway.bpffs to a shared bpffs mount"
    );
    run(&["mount", "-t", "bpf", "bpf", BPFFS], None).map(|_| ())
}

/// The pin path of the classifier's link for `iface` in this network
/// namespace: `<bpffs>/sluice/<netns inode>-<iface>` (bpffs is shared by
/// all namespaces, interface names are not).
pub fn classifier_pin(bpffs: &Path, iface: &str) -> Result<std::path::PathBuf, HostError> {
    Ok(bpffs
        .join("sluice")
        .join(format!("{}-{iface}", netns_ino(iface)?)))
}

/// The directory of endpoint mode's pinned socket-hook links in this
/// network namespace: `<bpffs>/sluice/<netns inode>-endpoint`.
pub fn endpoint_pin_dir(bpffs: &Path) -> Result<std::path::PathBuf, HostError> {
    Ok(bpffs
        .join("sluice")
        .join(format!("{}-endpoint", netns_ino("endpoint")?)))
}

/// The inode of this process's network namespace (`what`: for the error).
fn netns_ino(what: &str) -> Result<u64, HostError> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| HostError::Interface {
            iface: what.into(),
            detail: format!("reading /proc/self/ns/net: {e}"),
        })?
        .ino())
}

/// Where the lock of one gateway instance lives (its LAN interface, or
/// `endpoint` without a LAN, in this network namespace):
/// `/run/sluice/<netns inode>-<name>.lock`.
pub fn instance_lock(name: &str) -> Result<std::path::PathBuf, HostError> {
    Ok(Path::new(RUN_DIR).join(format!("{}-{name}.lock", netns_ino(name)?)))
}

/// sluice's runtime directory (instance locks).
pub(crate) const RUN_DIR: &str = "/run/sluice";

/// Whether an XDP program is attached to `iface` (`ip link show`).
pub fn xdp_attached(iface: &str) -> Result<bool, HostError> {
    let out = run(&["ip", "-d", "link", "show", "dev", iface], None)?;
    Ok(out.contains(" xdp") || out.contains("prog/xdp"))
}

/// Every address configured on any interface of this network namespace.
pub fn local_addrs() -> Result<Vec<IpAddr>, HostError> {
    Ok(parse_ip_addr(&run(&["ip", "-o", "addr", "show"], None)?))
}

/// Parses `ip -o addr show` lines: `2: lan0    inet 192.0.2.1/24 ...`.
/// Point-to-point lines (`inet A peer B/32`) give the local `A`; duplicates
/// are dropped.
fn parse_ip_addr(out: &str) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = Vec::new();
    for a in out.lines().filter_map(|l| {
        let mut w = l.split_whitespace();
        w.find(|t| *t == "inet" || *t == "inet6")?;
        w.next()?.split('/').next()?.parse().ok()
    }) {
        if !v.contains(&a) {
            v.push(a);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_comparison() {
        let f = release_at_least;
        assert_eq!(f("6.18.44-fc-v1045\n", 6, 2), Some(true));
        assert_eq!(f("6.1.0-28-amd64", 6, 2), Some(false));
        assert_eq!(f("5.19.0", 6, 2), Some(false));
        assert_eq!(f("7.0", 6, 2), Some(true));
        assert_eq!(f("garbage", 6, 2), None);
    }

    #[test]
    fn parses_ip_addr_output() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                   2: lan0    inet 192.0.2.1/24 scope global lan0\n\
                   2: lan0    inet6 2001:db8:1::1/64 scope global nodad\n\
                   3: weird line\n";
        let v = parse_ip_addr(out);
        assert_eq!(v.len(), 3);
        assert_eq!(v[1], "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(v[2], "2001:db8:1::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn parses_ip_oneline_output() {
        const OUTPUT: &str = "\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
1: lo    inet6 ::1/128 scope host noprefixroute \\       valid_lft forever preferred_lft forever
2: lan0    inet 192.0.2.1/24 brd 192.0.2.255 scope global lan0\\       valid_lft forever preferred_lft forever
3: ppp0    inet 198.51.100.1 peer 198.51.100.2/32 scope global ppp0\\       valid_lft forever preferred_lft forever
2: lan0    inet6 2001:db8::1/64 scope global \\       valid_lft forever preferred_lft forever
2: lan0    inet6 fe80::1/64 scope link \\       valid_lft forever preferred_lft forever
garbage line
";
        let addrs: Vec<String> = parse_ip_addr(OUTPUT)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            addrs,
            [
                "127.0.0.1",
                "::1",
                "192.0.2.1",
                "198.51.100.1",
                "2001:db8::1",
                "fe80::1"
            ]
        );
    }

    #[test]
    fn parses_mac() {
        assert_eq!(
            parse_mac("02:00:5e:00:53:01"),
            Some([2, 0, 0x5e, 0, 0x53, 1])
        );
        assert_eq!(parse_mac("02:00:5e:00:53"), None);
        assert_eq!(parse_mac("02:00:5e:00:53:01:02"), None);
        assert_eq!(parse_mac("zz:00:5e:00:53:01"), None);
    }

    #[test]
    fn failing_command_says_what_failed() {
        let e = run(&["false"], None).unwrap_err();
        assert!(e.to_string().contains("`false` failed"), "{e}");
        assert!(run(&["/nonexistent/cmd"], None).is_err());
    }
}
