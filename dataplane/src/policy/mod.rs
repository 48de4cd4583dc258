//! The policy model: identities, app profiles, forwarding profiles with
//! trusted-network detection, tenants, compiled into immutable tables.
pub mod trusted;
