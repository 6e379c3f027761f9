//! The text of the crate's Lua scripts, by name, for the crate's own model checker
//! (`model/`, which runs them in an embedded Lua against in-memory nodes); not part of
//! the API, hidden from the docs, and free to change in any release.
//!
//! [`script`] answers the text this build sends (with a `redlock_mutant` cfg, the
//! mutant's); [`mutant`] answers a mutant's text in any build, so that the model checker
//! can run the mutants without rebuilding the crate.

use crate::{mutants, scripts};

/// The text of the script `name` as this build runs it: `ACQUIRE_ONE`, `RELEASE`,
/// `EXTEND`, `EXTEND_HEAL`, `FENCED_ACQUIRE`, `PERMIT_ACQUIRE`, or one of the reader-writer lock's
/// `READ_ACQUIRE`, `READ_EXTEND`, `READ_RELEASE`, `READ_WAIT_CLEAR`, `WRITE_ACQUIRE`,
/// `WRITE_RELEASE`, `INTENT_CLEAR`; `None` for any other name.
pub fn script(name: &str) -> Option<&'static str> {
    Some(match name {
        "ACQUIRE_ONE" => scripts::ACQUIRE_ONE_LUA,
        "RELEASE" => mutants::release_script().unwrap_or(scripts::RELEASE_LUA),
        "EXTEND" => mutants::extend_script().unwrap_or(scripts::EXTEND_LUA),
        "EXTEND_HEAL" => scripts::EXTEND_HEAL_LUA,
        "FENCED_ACQUIRE" => mutants::fenced_acquire_script().unwrap_or(scripts::FENCED_ACQUIRE_LUA),
        "PERMIT_ACQUIRE" => scripts::PERMIT_ACQUIRE_LUA,
        "READ_ACQUIRE" => mutants::read_acquire_script().unwrap_or(scripts::READ_ACQUIRE_LUA),
        "READ_EXTEND" => scripts::READ_EXTEND_LUA,
        "READ_RELEASE" => scripts::READ_RELEASE_LUA,
        "READ_WAIT_CLEAR" => scripts::READ_WAIT_CLEAR_LUA,
        "WRITE_ACQUIRE" => mutants::write_acquire_script().unwrap_or(scripts::WRITE_ACQUIRE_LUA),
        "WRITE_RELEASE" => scripts::WRITE_RELEASE_LUA,
        "INTENT_CLEAR" => scripts::INTENT_CLEAR_LUA,
        _ => return None,
    })
}

/// The text a script mutant (`src/mutants.rs`) puts in place of a script: `plain_del`
/// (for `RELEASE`), `incr_max` (for `FENCED_ACQUIRE`), `lower_extend` (for `EXTEND`),
/// `read_beside_writer` (for `READ_ACQUIRE`) or `write_beside_readers` (for
/// `WRITE_ACQUIRE`); `None` for any other name.
pub fn mutant(name: &str) -> Option<&'static str> {
    match name {
        "plain_del" => Some(mutants::PLAIN_DEL_LUA),
        "incr_max" => Some(mutants::INCR_MAX_LUA),
        "lower_extend" => Some(mutants::LOWER_EXTEND_LUA),
        "read_beside_writer" => Some(mutants::READ_BESIDE_WRITER_LUA.as_str()),
        "write_beside_readers" => Some(mutants::WRITE_BESIDE_READERS_LUA.as_str()),
        _ => None,
    }
}
