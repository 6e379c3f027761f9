//! What one node is asked to run.

/// A request that one node should run.
#[derive(Clone, Copy)]
pub(crate) enum Request<'a> {
    Cmd(&'a redis::Cmd),
    Script(&'a crate::scripts::Call),
    /// A plain `SET NX`, and the script to send instead if it must be sent again: the
    /// first one may have been applied with its reply lost, and a re-sent `SET NX` would
    /// then find this owner's own value and answer "not set".
    Set {
        cmd: &'a redis::Cmd,
        resend: &'a crate::scripts::Call,
    },
    /// An extension that re-sets the value where the key is missing (`heal`), unless
    /// the node is in restart quarantine when the request is sent: then `plain`. Decided
    /// after the connection was made, when a restart has been judged.
    Heal {
        heal: &'a crate::scripts::Call,
        plain: &'a crate::scripts::Call,
    },
}

impl<'a> Request<'a> {
    /// What to send when the first try may have landed.
    pub(super) fn resend(self) -> Self {
        match self {
            Self::Set { resend, .. } => Self::Script(resend),
            other => other,
        }
    }
}
