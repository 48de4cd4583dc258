//! Errors of socket setup. The per-packet path returns `io::Error`s from
//! the kernel only (no allocation: they carry just the errno).

use std::{fmt, io};

/// Setting up an `AF_XDP` socket failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XskError {
    /// A configuration value is out of range.
    #[error("invalid AF_XDP configuration: `{field}` {reason}")]
    Config {
        /// The [`XskConfig`](super::XskConfig) field at fault.
        field: &'static str,
        /// What it must be.
        reason: &'static str,
    },
    /// The interface name does not resolve to an index.
    #[error("interface {name:?} not found")]
    Interface {
        /// The name given.
        name: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A syscall of the setup failed.
    #[error("AF_XDP {step} failed (ifindex {ifindex}, queue {queue_id})")]
    Setup {
        /// Which one.
        step: SetupStep,
        /// The interface being bound to.
        ifindex: u32,
        /// The queue being bound to.
        queue_id: u32,
        /// The kernel's error (see [`XskError::raw_os_error`]).
        #[source]
        source: io::Error,
    },
}

impl XskError {
    /// The errno, if the kernel refused something.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Config { .. } => None,
            Self::Interface { source, .. } | Self::Setup { source, .. } => source.raw_os_error(),
        }
    }

    /// The setup step that failed, if a syscall did.
    pub fn step(&self) -> Option<SetupStep> {
        match self {
            Self::Setup { step, .. } => Some(*step),
            _ => None,
        }
    }
}

impl From<XskError> for io::Error {
    fn from(err: XskError) -> Self {
        let kind = match &err {
            XskError::Config { .. } => io::ErrorKind::InvalidInput,
            XskError::Interface { source, .. } | XskError::Setup { source, .. } => source.kind(),
        };
        io::Error::new(kind, err)
    }
}

/// One of a socket's four rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingKind {
    /// The UMEM's fill ring.
    Fill,
    /// The UMEM's completion ring.
    Completion,
    /// The socket's RX ring.
    Rx,
    /// The socket's TX ring.
    Tx,
}

impl fmt::Display for RingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fill => "fill",
            Self::Completion => "completion",
            Self::Rx => "RX",
            Self::Tx => "TX",
        })
    }
}

/// The steps of [`XskSocket::new`](super::XskSocket::new), in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetupStep {
    /// `socket(AF_XDP, SOCK_RAW)`.
    Socket,
    /// `mmap` of the UMEM area.
    UmemMmap,
    /// `setsockopt(XDP_UMEM_REG)`.
    UmemReg,
    /// `setsockopt` of a ring's size (`XDP_UMEM_FILL_RING`, ...).
    RingSize(RingKind),
    /// `getsockopt(XDP_MMAP_OFFSETS)`.
    MmapOffsets,
    /// `mmap` of a ring.
    RingMmap(RingKind),
    /// `bind` to the interface and queue.
    Bind,
    /// `getsockopt(XDP_OPTIONS)` after binding.
    Options,
}

impl fmt::Display for SetupStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Socket => f.write_str("socket(AF_XDP)"),
            Self::UmemMmap => f.write_str("mmap of the UMEM"),
            Self::UmemReg => f.write_str("setsockopt(XDP_UMEM_REG)"),
            Self::RingSize(ring) => write!(f, "setsockopt of the {ring} ring size"),
            Self::MmapOffsets => f.write_str("getsockopt(XDP_MMAP_OFFSETS)"),
            Self::RingMmap(ring) => write!(f, "mmap of the {ring} ring"),
            Self::Bind => f.write_str("bind"),
            Self::Options => f.write_str("getsockopt(XDP_OPTIONS)"),
        }
    }
}
