//! Configuration files are operator input: any text gets a config or an
//! error naming a line, never a panic. The same for the process patterns
//! (operator input too): a valid one prints back to itself, and matching
//! it against the text split as a path never panics.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sluice_config::{EdgeConfig, GatewayConfig};
use sluice_core::process::ProcessPattern;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/nonexistent/fuzz.toml");
    if let Err(e) = GatewayConfig::parse(path, text) {
        let _ = e.to_string();
    }
    if let Err(e) = EdgeConfig::parse(path, text) {
        let _ = e.to_string();
    }
    let (pat, exe) = text.split_once('\n').unwrap_or((text, "/usr/bin/curl"));
    if let Ok(p) = ProcessPattern::parse(pat) {
        assert_eq!(ProcessPattern::parse(&p.to_string()), Ok(p.clone()));
        let _ = p.matches(exe, Some(&[0; 32]));
    }
});
