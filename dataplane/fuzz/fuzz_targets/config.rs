//! Configuration files are operator input: any text gets a config or an
//! error naming a line, never a panic.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sluice::config::{EdgeConfig, GatewayConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/nonexistent/fuzz.toml");
    if let Err(e) = GatewayConfig::parse(path, text) {
        let _ = e.to_string();
    }
    if let Err(e) = EdgeConfig::parse(path, text) {
        let _ = e.to_string();
    }
});
