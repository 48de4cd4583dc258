//! The parse probe: the classifier's header walk run alone on a frame
//! (`BPF_PROG_TEST_RUN`), its summary read back, for the differential
//! fuzz target that compares it with the user-space views
//! ([`crate::wire::summary`]).
use aya::{
    Ebpf,
    maps::Array,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use sluice_common::{PARSE_PROBE_PROGRAM, ParseSummary, map_names};

use super::{CLASSIFIER_OBJECT, EbpfError, layout};

/// The loaded parse probe (its own copy of the object's maps).
#[derive(Debug)]
pub struct ParseProbe {
    ebpf: Ebpf,
}

impl ParseProbe {
    /// Loads the probe program (needs `CAP_BPF`).
    pub fn load() -> Result<Self, EbpfError> {
        if CLASSIFIER_OBJECT.is_empty() {
            return Err(EbpfError::NotBuilt);
        }
        let mut ebpf = Ebpf::load(CLASSIFIER_OBJECT).map_err(|source| EbpfError::Object {
            source: source.into(),
        })?;
        let p: &mut Xdp = ebpf
            .program_mut(PARSE_PROBE_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .ok_or(EbpfError::MissingProgram {
                name: PARSE_PROBE_PROGRAM,
            })?;
        p.load().map_err(|source| EbpfError::Load {
            name: PARSE_PROBE_PROGRAM,
            source: source.into(),
        })?;
        Ok(Self { ebpf })
    }

    /// Runs the classifier's header walk on `frame` (at least 14 bytes:
    /// the kernel refuses shorter) and returns its summary.
    pub fn run(&self, frame: &[u8]) -> Result<ParseSummary, EbpfError> {
        let p: &Xdp = self
            .ebpf
            .program(PARSE_PROBE_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .ok_or(EbpfError::MissingProgram {
                name: PARSE_PROBE_PROGRAM,
            })?;
        let before = self.read()?.runs;
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        };
        p.test_run(opts).map_err(|source| EbpfError::TestRun {
            len: frame.len(),
            source: source.into(),
        })?;
        let s = self.read()?;
        debug_assert_eq!(s.runs, before.wrapping_add(1), "the probe ran once");
        Ok(s)
    }

    fn read(&self) -> Result<ParseSummary, EbpfError> {
        let name = map_names::PARSE_PROBE;
        let a = Array::<_, ParseSummary>::try_from(
            self.ebpf.map(name).ok_or(EbpfError::MissingMap { name })?,
        )
        .map_err(layout(name))?;
        a.get(&0, 0).map_err(|source| EbpfError::MapRead {
            name,
            source: source.into(),
        })
    }
}
