//! Link-layer tools for lab tests: a spoofed frame sent from a raw
//! socket ([`Lab::send_raw_udp`]), a packet capture that counts what
//! reached an interface ([`Capture`]), and a LAN host that lives on a VLAN
//! although the kernel has no 802.1Q devices ([`Lab::vlan_host`]: tc
//! programs tag its frames on the way out and untag, or drop, on the way
//! in).
//!
//! Everything runs inside the lab's namespaces (`ip netns exec`); the raw
//! sender is a few lines of the Python standard library.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{Host, Lab, ProcId, python};

/// One UDP datagram as a raw Ethernet frame, with any source addresses.
#[derive(Clone, Debug)]
pub struct RawUdp<'a> {
    /// The interface it leaves by (in the sender's namespace).
    pub iface: &'a str,
    /// Source MAC (`aa:bb:cc:dd:ee:ff`).
    pub src_mac: &'a str,
    /// Destination MAC.
    pub dst_mac: &'a str,
    /// Source address (any: this is the spoofing part).
    pub src: IpAddr,
    /// Destination address (same family as `src`).
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// How many copies.
    pub count: u32,
    /// Pause between copies, milliseconds.
    pub gap_ms: u32,
}

/// Builds and sends the frames (IPv4 with a header checksum, IPv6; the
/// UDP checksum computed for both).
const RAW_SENDER: &str = r#"
import socket, struct, sys, ipaddress
import time
iface, smac, dmac, src, dst, sport, dport, count, gap = sys.argv[1:10]
sport, dport, count, gap = int(sport), int(dport), int(count), int(gap)
vid = int(sys.argv[10]) if len(sys.argv) > 10 else -1
src, dst = ipaddress.ip_address(src), ipaddress.ip_address(dst)
payload = b"spoofed by the lab\n" + b"." * 40
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
if src.version == 4:
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, len(udp))
    udp = udp[:6] + struct.pack("!H", csum(pseudo + udp) or 0xffff) + udp[8:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x4242, 0, 64, 17, 0, src.packed, dst.packed)
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    ethertype, ip = 0x0800, hdr + udp
else:
    pseudo = src.packed + dst.packed + struct.pack("!IxxxB", len(udp), 17)
    udp = udp[:6] + struct.pack("!H", csum(pseudo + udp) or 0xffff) + udp[8:]
    ip = struct.pack("!IHBB16s16s", 0x60000000, len(udp), 17, 64, src.packed, dst.packed) + udp
    ethertype = 0x86dd
mac = lambda m: bytes.fromhex(m.replace(":", ""))
tag = struct.pack("!HH", 0x8100, vid) if vid >= 0 else b""
frame = mac(dmac) + mac(smac) + tag + struct.pack("!H", ethertype) + ip
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
for _ in range(count):
    s.send(frame)
    if gap:
        time.sleep(gap / 1000)
print("sent", count)
"#;

impl Lab {
    /// Sends `f` from `h` through a raw socket (`AF_PACKET`): whatever
    /// source MAC and address it says.
    ///
    /// # Panics
    /// If the sender fails.
    pub fn send_raw_udp(&self, h: Host, f: &RawUdp<'_>) {
        self.send_raw(h, f, None);
    }

    /// [`Lab::send_raw_udp`] with an 802.1Q tag of VLAN `vid` (TCI: PCP
    /// 0, the VLAN id) in front of the IP header.
    ///
    /// # Panics
    /// If the sender fails.
    pub fn send_raw_udp_tagged(&self, h: Host, f: &RawUdp<'_>, vid: u16) {
        self.send_raw(h, f, Some(vid));
    }

    fn send_raw(&self, h: Host, f: &RawUdp<'_>, vid: Option<u16>) {
        let vid = vid.map(|v| (v & 0x0fff).to_string());
        let (src, dst) = (f.src.to_string(), f.dst.to_string());
        let (sport, dport, count) = (
            f.sport.to_string(),
            f.dport.to_string(),
            f.count.to_string(),
        );
        let gap = f.gap_ms.to_string();
        let mut argv = vec![
            python(),
            "-c",
            RAW_SENDER,
            f.iface,
            f.src_mac,
            f.dst_mac,
            &src,
            &dst,
            &sport,
            &dport,
            &count,
            &gap,
        ];
        if let Some(v) = &vid {
            argv.push(v);
        }
        self.run_ok(h, &argv);
    }

    /// The MAC address of `iface` in `h` (`aa:bb:cc:dd:ee:ff`).
    ///
    /// # Panics
    /// If it cannot be read.
    pub fn mac_of(&self, h: Host, iface: &str) -> String {
        let path = format!("/sys/class/net/{iface}/address");
        self.run_ok(h, &["cat", &path]).trim().to_string()
    }

    /// Makes `h` a host on VLAN `vid` behind `iface`: the pinned tc
    /// programs `push` (egress: tag every frame) and `pop` (ingress:
    /// untag this VLAN's frames, drop every other) are attached, and the
    /// interface inserts tags in software (so that they are in the frame
    /// the peer's XDP program sees, not in offload metadata). The pins
    /// are removed once attached (tc holds the programs).
    ///
    /// # Panics
    /// If a command fails.
    pub fn vlan_host(&self, h: Host, iface: &str, push: &Path, pop: &Path) {
        self.run_ok(h, &["ethtool", "-K", iface, "txvlan", "off"]);
        self.run_ok(h, &["tc", "qdisc", "add", "dev", iface, "clsact"]);
        for (dir, pin) in [("egress", push), ("ingress", pop)] {
            let pin = pin.to_string_lossy();
            self.run_ok(
                h,
                &[
                    "tc",
                    "filter",
                    "add",
                    "dev",
                    iface,
                    dir,
                    "bpf",
                    "direct-action",
                    "object-pinned",
                    &pin,
                ],
            );
        }
        for pin in [push, pop] {
            let _ = std::fs::remove_file(pin);
        }
    }

    /// A directory of this lab's own in the lab's bpffs (for pins that a
    /// lab namespace's tools open), created now.
    ///
    /// # Panics
    /// If it cannot be created.
    pub fn bpffs_dir(&self) -> PathBuf {
        let name = self
            .dir()
            .file_name()
            .map_or_else(|| "lab".into(), |n| n.to_string_lossy().into_owned());
        let dir = Path::new(crate::LAB_BPFFS).join(name);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("sluice-lab: creating {}: {e}", dir.display()));
        dir
    }
}

/// A running `tcpdump` in a lab namespace, writing what it captures to a
/// file of the lab's directory.
#[derive(Debug)]
pub struct Capture {
    id: ProcId,
    file: PathBuf,
    name: String,
}

impl Capture {
    /// Starts capturing on `iface` in `h` what matches `filter` (pcap
    /// syntax; empty: everything), and waits until tcpdump listens.
    ///
    /// # Panics
    /// If tcpdump does not start within 10 s.
    pub fn start(lab: &Lab, h: Host, name: &str, iface: &str, filter: &str) -> Capture {
        let file = lab.dir().join(format!("{name}.pcap"));
        let f = file.to_string_lossy().into_owned();
        let mut argv = vec![
            "tcpdump",
            "-i",
            iface,
            "-n",
            "-U",
            "--immediate-mode",
            "-s",
            "128",
            "-w",
            &f,
        ];
        if !filter.is_empty() {
            argv.push(filter);
        }
        let id = lab.spawn(h, name, &argv);
        lab.wait_for(
            &format!("tcpdump {name} to listen on {iface} in {h}"),
            Duration::from_secs(10),
            || {
                assert!(
                    lab.is_running(id),
                    "sluice-lab: tcpdump {name} exited: {}",
                    lab.log(name)
                );
                lab.log(name).contains("listening on")
            },
        );
        Capture {
            id,
            file,
            name: name.to_owned(),
        }
    }

    /// Stops the capture and returns the packets it holds, one line each
    /// (`tcpdump -e -n -r`: with link-level headers, VLAN tags included).
    ///
    /// # Panics
    /// If the file cannot be read back.
    pub fn stop(self, lab: &Lab) -> Vec<String> {
        // Let the last packets reach the file (-U writes each at once).
        std::thread::sleep(Duration::from_millis(200));
        lab.stop(self.id);
        let f = self.file.to_string_lossy().into_owned();
        let out = lab.run(Host::Inet, &["tcpdump", "-e", "-n", "-r", &f]);
        assert!(
            out.status.success(),
            "sluice-lab: reading capture {}: {}\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr),
            lab.log(&self.name)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
