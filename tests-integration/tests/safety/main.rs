//! The safety suite: workloads under seeded faults judged by the harness's checkers
//! (docs/safety-suite.md), the explorer, and lock clients as separate OS processes
//! (`safety_client`, this package's binary). Real `redis-server` processes, started by
//! tokio-redlock-harness.
//!
//! Unix only, as the harness is; elsewhere this binary is empty.
#![cfg(unix)]

mod explore;
mod process;
mod safety;
// The library's test helpers, shared rather than copied: clusters, managers with test
// timings, direct looks at the nodes, the active mutant.
#[path = "../../../tests/it/support.rs"]
mod support;
mod workload;
