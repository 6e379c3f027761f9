//! Fencing counters shared by the resources of a namespace
//! ([`RedlockBuilder::shared_fencing_counter`](crate::RedlockBuilder::shared_fencing_counter)):
//! which counter a resource draws its tokens from.
//!
//! Why sharing keeps the guarantee: the fenced acquire writes a counter only to a
//! candidate greater than its value, so on each node a counter only grows, whoever
//! writes it. An acquisition of `r` bids against the counter `r` maps to, and every
//! acquisition of `r` maps to the same one (the rule is the manager's, not the call's);
//! the proof of `docs/safety.md` §4 then goes through word for word, with the shared
//! counter in place of `r`'s own. Other resources writing it only raise it: tokens
//! strictly increase across all the namespace's acquisitions, hence per resource.

/// The rules, longest resource prefix first, so that the most specific one wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SharedCounters(Vec<(String, String)>);

impl SharedCounters {
    /// Checks and orders `rules` of `(resource prefix, counter name)`.
    pub(crate) fn new(rules: &[(String, String)]) -> Result<Self, String> {
        let mut out: Vec<(String, String)> = Vec::with_capacity(rules.len());
        for (prefix, counter) in rules {
            if counter.is_empty() {
                return Err(format!(
                    "shared_fencing_counter for prefix `{prefix}` names an empty counter; \
                     name it after the namespace, such as `payments`"
                ));
            }
            match out.iter().find(|(p, _)| p == prefix) {
                Some((_, c)) if c == counter => {}
                Some((_, c)) => {
                    return Err(format!(
                        "shared_fencing_counter maps the prefix `{prefix}` to both `{c}` and \
                         `{counter}`; a resource must always draw from one counter, so keep one"
                    ))
                }
                None => out.push((prefix.clone(), counter.clone())),
            }
        }
        out.sort_by_key(|rule| std::cmp::Reverse(rule.0.len()));
        Ok(Self(out))
    }

    #[cfg(any(test, feature = "cluster"))]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The shared counter `resource` draws from, if a rule covers it (the one with the
    /// longest prefix).
    pub(crate) fn counter_for(&self, resource: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(prefix, _)| resource.starts_with(prefix.as_str()))
            .map(|(_, counter)| counter.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(r: &[(&str, &str)]) -> Vec<(String, String)> {
        r.iter()
            .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
            .collect()
    }

    #[test]
    fn the_longest_matching_prefix_wins_and_others_keep_their_own() {
        let s = SharedCounters::new(&rules(&[
            ("payment:", "payments"),
            ("payment:refund:", "refunds"),
        ]))
        .unwrap();
        assert_eq!(s.counter_for("payment:42"), Some("payments"));
        assert_eq!(s.counter_for("payment:refund:7"), Some("refunds"));
        assert_eq!(s.counter_for("order:1"), None);
        assert_eq!(s.counter_for("payment"), None);
        // The empty prefix covers everything not covered more specifically.
        let all = SharedCounters::new(&rules(&[("", "all"), ("a", "a")])).unwrap();
        assert_eq!(all.counter_for("b"), Some("all"));
        assert_eq!(all.counter_for("ab"), Some("a"));
        assert!(SharedCounters::default().is_empty());
    }

    #[test]
    fn an_empty_counter_or_a_prefix_with_two_counters_is_refused() {
        assert!(SharedCounters::new(&rules(&[("p:", "")]))
            .unwrap_err()
            .contains("empty counter"));
        assert!(SharedCounters::new(&rules(&[("p:", "a"), ("p:", "b")]))
            .unwrap_err()
            .contains("both"));
        // The same rule twice is one rule.
        let s = SharedCounters::new(&rules(&[("p:", "a"), ("p:", "a")])).unwrap();
        assert_eq!(s, SharedCounters::new(&rules(&[("p:", "a")])).unwrap());
    }
}
