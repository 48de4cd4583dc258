//! The embedded XDP classifier (placeholder: being written).

/// The classifier's ELF object, built by `build.rs` from `ebpf/classifier`.
pub static CLASSIFIER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice-classifier"));
