//! Integration tests: one binary, real `redis-server` processes started by the harness.

mod core;
mod fencing;
mod harness;
mod lease;
mod metrics;
mod quarantine;
mod support;
