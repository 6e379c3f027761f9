//! Integration tests: one binary, real `redis-server` processes started by the harness.

mod core;
mod harness;
mod safety;
mod support;
mod workload;
