//! Benchmarks for sluice (see `benches/`).
