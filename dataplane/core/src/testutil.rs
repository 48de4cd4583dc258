//! Deterministic pseudo-random numbers for tests, fuzz seeds and benches
//! (seeded tables and chunkings without a `rand` dependency). Not used by
//! the dataplane itself.

/// xorshift64*: small, fast, seeded; not for anything secret.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (0 is replaced, xorshift needs a non-zero
    /// state).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A `usize` in `0..n` (`n > 0`).
    pub fn below_usize(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// 128 random bits.
    pub fn u128(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }
}

/// DHCP lease files and a raw DHCPACK, as the trusted-network tests read
/// them (the parsers in core, the lease-directory scan in the gateway).
#[allow(missing_docs)]
pub mod leases {
    pub const DHCLIENT_LEASES: &str = r#"default-duid "\000\001\000\001\044\217\013\222RT\000\022\064V";
lease {
  interface "eth0";
  fixed-address 192.0.2.10;
  option subnet-mask 255.255.255.0;
  option routers 192.0.2.1;
  option dhcp-lease-time 86400;
  option dhcp-message-type 5;
  option domain-name-servers 192.0.2.53;
  option dhcp-server-identifier 192.0.2.2;
  option domain-name "corp.example";
  renew 4 2026/01/01 10:00:00;
  rebind 4 2026/01/01 20:00:00;
  expire 5 2026/01/02 00:00:00;
}
lease {
  interface "wlan0";
  fixed-address 198.51.100.7;
  option dhcp-server-identifier 198.51.100.1;
  expire epoch 1767312000; # Fri Jan 02 00:00:00 2026
}
lease {
  interface "eth0";
  fixed-address 192.0.2.11;
  option dhcp-server-identifier 192.0.2.3;
  expire 6 2026/01/03 00:00:00;
}
"#;

    /// systemd-networkd's `/run/systemd/netif/leases/<ifindex>`; the
    /// `NetworkManager` internal client's `internal-<uuid>-<iface>.lease` has
    /// the same form.
    pub const NETWORKD_LEASE: &str = "\
# This is private data. Do not parse.
ADDRESS=192.0.2.10
NETMASK=255.255.255.0
ROUTER=192.0.2.1
SERVER_ADDRESS=192.0.2.2
NEXT_SERVER=0.0.0.0
T1=43200
T2=75600
LIFETIME=86400
DNS=192.0.2.53
DOMAINNAME=corp.example
CLIENTID=ff4e5d1a9b00020000ab11b7b1e2b3c4d5e6f7
";

    pub const DHCLIENT6_LEASE: &str = r#"lease6 {
  interface "eth0";
  ia-na 1a:2b:3c:4d {
    starts 1767225600;
    iaaddr 2001:db8:1::7 {
      starts 1767225600;
      preferred-life 7200;
    }
  }
  option dhcp6.server-id 0:1:0:1:2a:3b:4c:5d:0:11:22:33:44:55;
}
"#;

    /// A DHCPACK as dhcpcd stores it: BOOTP header, cookie, options
    /// (message type, a pad, server identifier, end).
    pub fn dhcp_ack() -> Vec<u8> {
        let mut b = vec![0u8; 240];
        b[0] = 2; // BOOTREPLY
        b[16..20].copy_from_slice(&[192, 0, 2, 10]); // yiaddr
        b[236..240].copy_from_slice(&[99, 130, 83, 99]);
        b.extend_from_slice(&[53, 1, 5, 0, 54, 4, 192, 0, 2, 2, 255]);
        b
    }
}
