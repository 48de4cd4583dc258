//! End-to-end lab tests (placeholder).
