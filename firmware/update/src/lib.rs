//! The sluice appliance's updater (`sluice-update`) and the pieces the
//! image build shares with it: the disk [`layout`], the signed update
//! [`bundle`], the [`esp`]'s boot entries with systemd-boot's boot
//! counting, the A/B [`install`] and the boot's [`health`] check.
//!
//! See `firmware/README.md` for the whole cycle.

pub mod bundle;
pub mod enrol;
pub mod esp;
pub mod health;
pub mod install;
pub mod layout;
pub mod version;
