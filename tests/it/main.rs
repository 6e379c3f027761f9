//! Integration tests: one binary, real `redis-server` processes started by
//! tokio-redlock-harness. The safety suite, the explorer and the client processes are
//! tests of their own package (tests-integration/).
//!
//! Unix only, as the harness is; elsewhere this binary is empty.
#![cfg(unix)]

mod acl;
mod attempts;
mod belief;
#[cfg(feature = "cluster")]
mod cluster_faults;
#[cfg(feature = "cluster")]
mod cluster_slots;
#[cfg(feature = "cluster")]
mod cluster_vote;
mod core;
mod election;
mod fencing;
mod heal;
mod hold;
mod hostile;
mod inspect;
mod lease;
mod local;
mod metrics;
mod ops;
mod order;
mod ownership;
mod payment;
mod phase_fair;
mod quarantine;
mod release;
mod retry_timing;
mod rw_and_permits;
mod rw_order;
mod rw_semantics;
mod secrets;
mod support;
mod usage;
mod waiters;
mod with_lock;
