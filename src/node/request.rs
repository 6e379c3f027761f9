//! What one node is asked to run.

/// A request that one node should run.
#[derive(Clone, Copy)]
pub(crate) enum Request<'a> {
    Cmd(&'a redis::Cmd),
    Script(&'a crate::scripts::Call),
    /// A plain `SET NX` of [`set_nx`](crate::scripts::set_nx). If it must be sent again,
    /// [`acquire_one_for`](crate::scripts::acquire_one_for) goes instead: the first one
    /// may have been applied with its reply lost, and a re-sent `SET NX` would then find
    /// this owner's own value and answer "not set".
    Set(&'a redis::Cmd),
    /// An extension that re-sets the value where the key is missing (`heal`), unless
    /// the node is in restart quarantine when the request is sent: then `plain`. Decided
    /// after the connection was made, when a restart has been judged.
    Heal {
        heal: &'a crate::scripts::Call,
        plain: &'a crate::scripts::Call,
    },
}
