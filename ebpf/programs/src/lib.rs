//! Empty library target so that the dataplane can name this crate as a
//! build-dependency (cargo then rebuilds it when the classifier changes).
#![no_std]
