//! Integration tests: one binary, real `redis-server` processes started by the harness.

mod core;
mod explore;
mod fencing;
mod harness;
mod hostile;
mod lease;
mod metrics;
mod ops;
mod payment;
mod process;
mod quarantine;
mod safety;
mod support;
mod workload;
