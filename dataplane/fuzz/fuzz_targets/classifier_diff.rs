//! Differential fuzzing of the XDP classifier's header walk: every input
//! frame runs through the real classifier in the kernel
//! (`BPF_PROG_TEST_RUN`: its parse probe, and the classifier itself) and
//! through the user-space statement of the same rules
//! (`sluice_core::wire::summary`); the kind, addresses, protocol, ports,
//! fragment, VLAN tags and drop reason must agree, and so must the
//! classifier's verdict class (the drop counter it moves for a malformed
//! frame, a pass for ARP and other non-IP).
//!
//! Needs root (BPF); `cargo xtask fuzz` and `cargo xtask test` run it as
//! root.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_gateway::ebpf::{Programs, ParseProbe, XDP_DROP, XDP_PASS};
use sluice_core::wire::summary::summary;

struct Kernel {
    probe: ParseProbe,
    classifier: Programs,
}

fn fail(e: &dyn std::error::Error) -> ! {
    panic!(
        "classifier_diff needs root and the embedded classifier (BPF_PROG_TEST_RUN): {e}: {}",
        sluice_gateway::ebpf::error_chain(e)
    )
}

fn kernel() -> &'static Kernel {
    static K: OnceLock<Kernel> = OnceLock::new();
    K.get_or_init(|| Kernel {
        probe: ParseProbe::load().unwrap_or_else(|e| fail(&e)),
        classifier: Programs::load().unwrap_or_else(|e| fail(&e)),
    })
}

/// The largest frame tried: the kernel's XDP test run takes one page
/// minus head- and tailroom.
const MAX_FRAME: usize = 2048;

fuzz_target!(|data: &[u8]| {
    if data.len() < 14 || data.len() > MAX_FRAME {
        return;
    }
    let k = kernel();
    let got = k.probe.run(data).expect("BPF_PROG_TEST_RUN of the parse probe");
    let mut want = summary(data);
    want.runs = got.runs;
    assert_eq!(got, want, "kernel (left) and user space (right) disagree on {data:02x?}");
    // The classifier's verdict class agrees with the parse.
    let before = k.classifier.counters().expect("counters");
    let action = k.classifier.test_run(data).expect("BPF_PROG_TEST_RUN");
    let after = k.classifier.counters().expect("counters");
    if want.error != 0 {
        let c = (want.error - 1) as usize;
        assert_eq!(action, XDP_DROP, "malformed frame not dropped: {data:02x?}");
        assert_eq!(after[c] - before[c], 1, "drop counter {c} for {data:02x?}");
    } else if want.kind == 1 || want.kind == 2 {
        assert_eq!(action, XDP_PASS, "non-IP not passed: {data:02x?}");
    } else {
        assert!(action == XDP_PASS || action == XDP_DROP, "action {action}");
    }
});
