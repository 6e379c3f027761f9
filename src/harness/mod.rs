//! The multi-node test harness (placeholder).
