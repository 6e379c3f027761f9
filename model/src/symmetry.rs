//! Symmetry reduction for the depth-first runs: the nodes are interchangeable, so a state
//! and the same state with its nodes renamed are one situation.

use crate::client::Phase;
use crate::model::State;

/// The state with its nodes renamed so that equal situations up to the nodes' names
/// look alike (the nodes are interchangeable): the least of all renamings, for up to
/// four nodes (24 renamings); five nodes are left as they are.
pub fn representative(state: &State) -> State {
    let n = state.nodes.len();
    if n > 4 {
        return state.clone();
    }
    let mut best: Option<State> = None;
    for perm in permutations(n) {
        let renamed = rename(state, &perm);
        if best.as_ref().is_none_or(|b| renamed < *b) {
            best = Some(renamed);
        }
    }
    best.expect("at least one node")
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

/// Node `i` becomes node `perm[i]`.
fn rename(state: &State, perm: &[usize]) -> State {
    let mut s = state.clone();
    for (i, node) in state.nodes.iter().enumerate() {
        s.nodes[perm[i]] = node.clone();
    }
    for msg in &mut s.net {
        msg.node = perm[usize::from(msg.node)] as u8;
    }
    s.net.sort();
    for (client, old) in s.clients.iter_mut().zip(&state.clients) {
        if let (
            Phase::Acquiring(r) | Phase::Extending(_, r),
            Phase::Acquiring(o) | Phase::Extending(_, o),
        ) = (&mut client.phase, &old.phase)
        {
            for (i, a) in o.answers.iter().enumerate() {
                r.answers[perm[i]] = *a;
            }
        }
    }
    s
}
