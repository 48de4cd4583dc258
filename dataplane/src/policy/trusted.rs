//! Trusted-network detection (placeholder, filled in by the next commit).
