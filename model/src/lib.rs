//! An exhaustive model check of tokio-redlock's own Lua scripts (issue 22).
//!
//! The scripts' text comes from the crate ([`tokio_redlock::script_source`]) and runs in
//! an embedded Lua 5.1 ([`lua`]) against small in-memory keyspaces ([`keyspace`]), one
//! per node. [`model`] is the protocol around them as a [stateright] model: clients that
//! follow the crate's rules (fan-out, quorum, validity, undo, extend, release, cancel),
//! node clocks with bounded skew, and a network that delivers any request or reply at
//! any later time, or never; nodes that lose their data behind the restart quarantine.
//! [`rw`] maps the reader-writer lock's requests to its scripts, [`lifetime`] bounds
//! how long a key may live. [`trace`] prints a counterexample as a numbered story.
//!
//! The quorum, validity and drift rules are the crate's own `src/quorum.rs`, compiled
//! here as source, so the model and the library cannot disagree about them.

#![warn(missing_docs)]

pub mod check;
pub mod client;
pub mod keyspace;
pub mod lifetime;
pub mod lua;
pub mod model;
pub mod rw;
pub mod scripts;
pub mod symmetry;
pub mod trace;

/// The crate's pure quorum arithmetic, included as source (it is private in the crate).
#[allow(dead_code, unreachable_pub)]
#[path = "../../src/quorum.rs"]
mod quorum;

/// What `quorum.rs` reads from the crate's mutant seam: the real rule, never a mutant.
mod mutants {
    pub(crate) const QUORUM_HALF: bool = false;
}
