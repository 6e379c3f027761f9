//! `available()`: which permits of a semaphore a quorum of nodes reports free.

use redis::Value;

use super::claim::check_permits;
use super::Redlock;
use crate::error::Error;
use crate::kind;
use crate::quorum::{Tally, Vote};
use crate::round::{self, fan_out, Collecting, Count, Op};
use crate::scripts;

impl Redlock {
    /// How many of the `permits` slots of `resource` a quorum of nodes reports free.
    pub(crate) async fn available_permits(
        &self,
        resource: &str,
        permits: usize,
    ) -> Result<usize, Error> {
        check_permits(permits)?;
        let key = self.key_of(resource);
        let slots: Vec<String> = (0..permits).map(|i| kind::permit_key(&key, i)).collect();
        let call = scripts::permit_taken(&slots);
        let mut replies = Collecting::new(fan_out(&self.inner.nodes, Op::free(call)), "available");
        let votes = round::collect(
            &mut replies,
            &self.inner.nodes,
            Count::Answers,
            |reply| {
                let Value::Array(items) = reply else {
                    return Err(format!("slot check answered {reply:?}"));
                };
                let taken: Option<Vec<bool>> = items
                    .iter()
                    .map(|v| match v {
                        Value::Int(i) => Some(*i != 0),
                        _ => None,
                    })
                    .collect();
                match taken {
                    Some(t) if t.len() == permits => Ok((Vote::Yes, t)),
                    _ => Err(format!("slot check answered {reply:?}")),
                }
            },
            |_| false,
        )
        .await;
        let tally: Tally = votes.tally;
        if tally.yes < tally.quorum {
            return Err(round::no_quorum(
                resource,
                1,
                tally.yes,
                &tally,
                votes.causes,
            ));
        }
        // A slot is available when enough nodes have it free for a quorum to grant it.
        let free_on = |s: usize| {
            votes
                .answers
                .iter()
                .flatten()
                .filter(|taken| !taken[s])
                .count()
        };
        Ok((0..permits).filter(|s| free_on(*s) >= tally.quorum).count())
    }
}
