//! The driver behind a network interface (`SIOCETHTOOL`,
//! `ETHTOOL_GDRVINFO`), which decides the default XDP attach mode.
use std::{io, os::fd::AsRawFd as _};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

/// `struct ethtool_drvinfo` (196 bytes).
#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union.
#[repr(C)]
struct IfReqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// The name of the driver of `iface` (`veth`, `virtio_net`, `ixgbe`,
/// `mlx5_core`, ...), as `ethtool -i` shows it.
///
/// # Errors
/// `InvalidInput` for a bad name, otherwise the kernel's error (`ENODEV`
/// for an unknown interface, `EOPNOTSUPP` for a device without ethtool).
pub fn driver(iface: &str) -> io::Result<String> {
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    // SIOCETHTOOL writes one `struct ethtool_drvinfo` through the pointer:
    // `info` is laid out as the kernel's struct.
    ethtool_ioctl(iface, (&raw mut info).cast())?;
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// `ETHTOOL_STXCSUM`: transmit checksum offload on or off.
const ETHTOOL_STXCSUM: u32 = 0x0000_0017;

/// `struct ethtool_value`.
#[repr(C)]
struct Value {
    cmd: u32,
    data: u32,
}

/// Turns transmit checksum offload of `iface` on or off (`ethtool -K
/// <iface> tx on|off`; segmentation offloads that depend on it follow).
///
/// Endpoint mode needs it off on the host side of its veth pair: a packet
/// the host hands to a veth with a partial checksum (offloaded) keeps it
/// partial through generic XDP and `AF_XDP`, and would cross the tunnel
/// with a checksum the receiver rejects.
pub fn set_tx_checksum(iface: &str, on: bool) -> io::Result<()> {
    let mut v = Value {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    // The kernel reads one `struct ethtool_value` through the pointer.
    ethtool_ioctl(iface, (&raw mut v).cast())
}

/// `SIOCETHTOOL` on `iface` with `data` as `ifr_data`: `data` must point to
/// the command's struct (its first field the command), live for the call.
fn ethtool_ioctl(iface: &str, data: *mut libc::c_void) -> io::Result<()> {
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let sock =
        std::net::UdpSocket::bind("0.0.0.0:0").or_else(|_| std::net::UdpSocket::bind("[::]:0"))?;
    let mut req = IfReqData {
        name: [0; libc::IFNAMSIZ],
        data,
        _pad: [0; 16],
    };
    req.name[..iface.len()].copy_from_slice(iface.as_bytes());
    // SAFETY: `sock` is an open socket; SIOCETHTOOL reads the `ifreq` (name
    // and `ifr_data`) and reads or writes the command's struct through
    // `ifr_data`, which the callers point at a live local of the kernel's
    // layout.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &raw mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn layouts_match_the_kernel() {
        assert_eq!(size_of::<super::DrvInfo>(), 196);
        assert_eq!(size_of::<super::IfReqData>(), 40);
    }

    #[test]
    fn loopback_and_bad_names() {
        // `lo` has no ethtool driver info on every kernel; whatever the
        // answer, it is an answer, not a crash.
        let _ = super::driver("lo");
        assert!(super::driver("").is_err());
        assert!(super::driver("a-name-far-too-long").is_err());
        assert!(super::driver("sluice-nonexist").is_err());
    }
}
