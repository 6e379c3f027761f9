//! tokio-redlock: the Redlock distributed lock on N independent Redis nodes, for tokio.
//!
//! (Crate documentation is filled in as the crate grows.)
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "harness")]
#[cfg_attr(docsrs, doc(cfg(feature = "harness")))]
pub mod harness;
