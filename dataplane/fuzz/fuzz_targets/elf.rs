//! Executables as endpoint mode's exec watcher reads them (any user's
//! file): the ELF program-header walk for `PT_INTERP`. Nothing may panic
//! or read unboundedly; a loader found is an absolute path from the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_core::process::elf::elf_interp;

fuzz_target!(|data: &[u8]| {
    let head = &data[..data.len().min(64)];
    if let Some(interp) = elf_interp(data, head) {
        assert!(interp.starts_with('/'));
        assert!(interp.len() <= 4096);
    }
});
