//! What trusted-network detection reads from the host (resolv.conf, `ip
//! -o route show`, DHCP lease files in text or as the raw DHCP message)
//! may be written by other software: any bytes give facts or nothing,
//! never a panic, in time linear in the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_core::policy::facts;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (servers, _search) = facts::parse_resolv_conf(&text);
    assert!(servers.len() <= text.matches("nameserver").count());
    let leases = facts::parse_lease(&text);
    // Each lease names a server written in the text (blocks or KEY=VALUE).
    assert!(leases.len() <= text.matches("lease {").count().max(1));
    let _ = facts::parse_bootp(data);
    for r in facts::parse_default_routes(&text) {
        assert!(!r.dev.is_empty());
    }
});
