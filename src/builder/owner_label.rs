//! Owner labels (see [`RedlockBuilder::owner_label`](super::RedlockBuilder::owner_label)):
//! the rule a label follows, the value made with one, and the label read back from a
//! stored value.

use super::RedlockBuilder;

/// Longest label: keys' values are sent on every request and stored on every node,
/// and a worker's name fits in far less.
pub(crate) const MAX_LABEL_LEN: usize = 64;

/// Characters a label may use besides ASCII letters and digits: enough for host names,
/// pod names, `user@host` and `service/instance`, and none that needs quoting in a shell
/// or a log line. `:` is excluded so that the label ends at the value's first `:`.
const LABEL_PUNCTUATION: &[u8] = b"-_.@/";

/// Length of the random part of a value: a UUID (or 128 bits) as 32 hex digits.
const RANDOM_HEX_LEN: usize = 32;

impl RedlockBuilder {
    /// Puts `label` in front of every owner value this manager stores, so that an
    /// operator's `GET <key>` (and [`Redlock::inspect`](crate::Redlock::inspect)) shows who holds a lock: the value
    /// becomes `<label>:<UUID v4, 32 hex digits>`, e.g.
    /// `billing-worker-7:9f1c0b6e2a4d4c7f8e3b5a6d7c8e9f0a`. Defaults to none: the value
    /// is 32 hex digits of 128 random bits.
    ///
    /// A label is 1 to 64 bytes of ASCII letters, digits and `-_.@/`: no `:`, so that
    /// the label can be read back from a value. [`build`](RedlockBuilder::build) refuses any
    /// other with [`Error::Config`](crate::Error::Config). A label is not a secret and not an identity check:
    /// whoever can read the key sees it, and locks are still told apart by the random
    /// part alone.
    ///
    /// ```
    /// use tokio_redlock::Redlock;
    ///
    /// let builder = Redlock::builder().node("redis://127.0.0.1:7001");
    /// assert!(builder.clone().owner_label("billing-worker-7").build().is_ok());
    /// assert!(builder.owner_label("worker:7").build().is_err()); // `:` ends a label
    /// ```
    pub fn owner_label(mut self, label: impl Into<String>) -> Self {
        self.owner_label = Some(label.into());
        self
    }
}

/// Checks `label` against the rule; the error says which part of it is broken.
pub(crate) fn check(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err(
            "owner_label is empty: give a name such as `billing-worker-7`, or \
                    leave the label out"
                .into(),
        );
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(format!(
            "owner_label of {} bytes is over the {MAX_LABEL_LEN}-byte limit: use a \
             shorter name",
            label.len()
        ));
    }
    if let Some(c) = label.chars().find(|c| !allowed(*c)) {
        let why = if c == ':' {
            " (`:` separates the label from the random part of the value)"
        } else {
            ""
        };
        return Err(format!(
            "owner_label `{}` contains {c:?}{why}: a label may use only ASCII letters, \
             digits and `-_.@/`",
            label.escape_debug()
        ));
    }
    Ok(())
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || (c.is_ascii() && LABEL_PUNCTUATION.contains(&(c as u8)))
}

/// The label in a stored value, if the value has the form this crate writes with a
/// label: a valid label, `:`, then 32 hex digits. A value written by another client
/// (or without a label) has none, even if it happens to contain a `:`.
pub(crate) fn label_of(value: &str) -> Option<&str> {
    let (label, random) = value.split_once(':')?;
    let random_ok = random.len() == RANDOM_HEX_LEN && random.bytes().all(|b| b.is_ascii_hexdigit());
    (random_ok && check(label).is_ok()).then_some(label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::labelled_value;

    #[test]
    fn good_labels_pass() {
        for label in [
            "billing-worker-7",
            "a",
            "pod_1.eu-west",
            "svc@host",
            "team/service",
            &"x".repeat(MAX_LABEL_LEN),
        ] {
            assert_eq!(check(label), Ok(()), "{label}");
        }
    }

    #[test]
    fn bad_labels_are_refused_naming_the_rule() {
        let empty = check("").unwrap_err();
        assert!(empty.contains("empty"), "{empty}");
        let long = check(&"x".repeat(MAX_LABEL_LEN + 1)).unwrap_err();
        assert!(
            long.contains("65 bytes") && long.contains("64-byte limit"),
            "{long}"
        );
        let colon = check("worker:7").unwrap_err();
        assert!(
            colon.contains("':'") && colon.contains("separates"),
            "{colon}"
        );
        for (label, c) in [
            ("a b", "' '"),
            ("naïve", "'ï'"),
            ("a\nb", "'\\n'"),
            ("*", "'*'"),
        ] {
            let msg = check(label).unwrap_err();
            assert!(msg.contains(c), "{label:?}: {msg}");
            assert!(
                msg.contains("only ASCII letters, digits and `-_.@/`"),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_labelled_value_is_the_label_and_a_v4_uuid() {
        let value = labelled_value("billing-worker-7");
        let (label, random) = value.split_once(':').unwrap();
        assert_eq!(label, "billing-worker-7");
        let uuid = uuid::Uuid::try_parse(random).unwrap();
        assert_eq!(uuid.get_version(), Some(uuid::Version::Random));
        assert_eq!(random, uuid.simple().to_string());
        assert_ne!(labelled_value("w"), labelled_value("w"));
    }

    #[test]
    fn the_label_is_read_back_only_from_values_of_that_form() {
        let value = labelled_value("svc@host/1");
        assert_eq!(label_of(&value), Some("svc@host/1"));
        let plain = format!("{:032x}", u128::MAX - 7);
        assert_eq!(label_of(&plain), None);
        // Values of other clients, or garbage, that contain a colon.
        assert_eq!(label_of("a:b"), None);
        assert_eq!(label_of(&format!("bad label:{plain}")), None);
        assert_eq!(label_of(&format!(":{plain}")), None);
        assert_eq!(label_of(&format!("w:{plain}:x")), None);
        assert_eq!(label_of(&format!("w:{}", &plain[1..])), None);
        assert_eq!(label_of(&format!("w:{plain}")), Some("w"));
    }
}
