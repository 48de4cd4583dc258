//! Review h24 (issue 16): the edge worker's datagram send batch. A
//! failing test is a finding.
use std::{net::SocketAddr, time::Duration};

use super::*;
use crate::sys::udp::{UdpConfig, UdpSocket};

/// The worker's batch holds datagrams for many gateways. `send_batch`
/// reports a destination the kernel refuses at once (here port 0, which
/// a compromised gateway gets the edge to use by sending one
/// authenticated datagram from source port 0: see sluice-core's
/// `review_h24_a_datagram_from_port_0_becomes_the_reply_address`) as an
/// error after dropping that one datagram, but `flush_batch` then clears
/// the whole batch: every other gateway's datagram queued behind it is
/// lost, at every flush, for as long as the bad peer has replies.
#[test]
fn review_h24_one_refused_destination_does_not_drop_other_gateways_datagrams() {
    let victim = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    victim
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let good = victim.local_addr().unwrap();
    let bad: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), &UdpConfig::default()).unwrap();
    let mut u = UdpPath::new(sock);
    // One datagram for the hostile gateway, then three for another.
    assert!(u.tx.push(&[1; 100], Some(bad)));
    for i in 0..3u8 {
        assert!(u.tx.push(&[i; 200], Some(good)));
    }
    u.flush();
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while victim.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    assert_eq!(
        got, 3,
        "the other gateway got {got} of its 3 datagrams ({} counted dropped)",
        u.dropped
    );
}
