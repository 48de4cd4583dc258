//! Edge selection and the transport chooser driven by arbitrary inputs in
//! arbitrary order (late, duplicate and unknown reports, resolutions,
//! probe replies for probes never sent, time jumps): neither may panic,
//! the active edge is always one the selector holds for up, the queues
//! stay bounded when drained, and the path never both uses datagrams and
//! reports the edge failed.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sluice_core::{
    datagram::path::{Path, PathConfig, PathState, Transport},
    select::{
        Action, Address, EdgeId, EdgeSet, EdgeSpec, Failback, Failure, Phase, Selector, Settings,
    },
};

fuzz_target!(|data: &[u8]| {
    let [n, standby, fb, flags, ops @ ..] = data else {
        return;
    };
    let n = 1 + usize::from(*n % 6);
    let edges = (0..n)
        .map(|i| EdgeSpec {
            name: format!("e{i}"),
            address: if flags & (1 << i) != 0 {
                Address::Name {
                    host: format!("edge{i}.example.net"),
                    port: 4443,
                }
            } else {
                Address::Ip(
                    format!("198.51.100.{}:4443", i + 1)
                        .parse()
                        .expect("address"),
                )
            },
            priority: u8::try_from(i % 3).unwrap_or(0),
        })
        .collect();
    let set = EdgeSet {
        edges,
        settings: Settings {
            standby: usize::from(*standby % 4),
            failback: match fb % 3 {
                0 => Failback::Immediate,
                1 => Failback::Never,
                _ => Failback::AfterStable(Duration::from_millis(u64::from(*fb) * 10)),
            },
            ..Settings::default()
        },
    };
    let t0 = Instant::now();
    let Ok(mut sel) = Selector::new(&set, t0) else {
        return;
    };
    let mut path = Path::new(
        PathConfig {
            primary: Transport::Udp,
            fallback: flags & 0x80 == 0,
            ..PathConfig::default()
        },
        t0,
    );
    let mut now = t0;
    let mut probes: Vec<(EdgeId, u64)> = Vec::new();
    for op in ops.chunks(2) {
        let [kind, arg] = *op else { break };
        let e = sel
            .edges()
            .nth(usize::from(arg) % n)
            .map(|(id, _)| id)
            .expect("edge");
        match kind % 12 {
            0 => now += Duration::from_millis(u64::from(arg) * 7),
            1 => sel.handle_connected(e, now),
            2 => sel.handle_failed(e, Failure::Transport, now),
            3 => sel.handle_failed(e, Failure::Connect, now),
            4 => {
                let addrs = ["192.0.2.7:4443".parse().expect("address")];
                let addrs: &[_] = if arg & 1 == 0 { &addrs } else { &[] };
                sel.handle_resolved(e, addrs, now);
            }
            5 => {
                if let Some(&(id, seq)) = probes.get(usize::from(arg) % probes.len().max(1)) {
                    sel.handle_probe_reply(id, seq, now);
                }
            }
            6 => sel.handle_probe_reply(e, u64::from(arg), now),
            7 => {
                if let Some(t) = sel.poll_timeout() {
                    now = now.max(t);
                    sel.handle_timeout(now);
                }
            }
            8 => path.handle_accepted(now),
            9 => path.handle_refused(now),
            10 => path.handle_probe_reply(now),
            _ => {
                path.handle_timeout(now);
                let _ = path.poll_probe(now);
            }
        }
        while let Some(a) = sel.poll_action() {
            if let Action::SendProbe { edge, seq } = a {
                if probes.len() >= 64 {
                    probes.remove(0);
                }
                probes.push((edge, seq));
            }
        }
        while sel.poll_event().is_some() {}
        while path.poll_event().is_some() {}
        let status = sel.status(now);
        if let Some(a) = sel.active() {
            assert_eq!(status.edges[a.index()].phase, Phase::Active);
        }
        assert!(
            status.edges.iter().filter(|e| e.phase == Phase::Active).count() <= 1,
            "one active edge at most"
        );
        assert!(!(path.uses_datagrams() && path.state() == PathState::Failed));
        if path.state() == PathState::Failed {
            assert!(!path.tls_allowed());
        }
    }
});
