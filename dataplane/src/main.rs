//! The `sluice` command line (placeholder).
fn main() {}
