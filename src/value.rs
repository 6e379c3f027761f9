//! Owner values: the random value an acquisition stores on the nodes, which only its
//! owner knows and so only its owner can release or extend.

use std::sync::Arc;

use rand::Rng;

/// A fresh owner value with `label`: `<label>:<UUID v4 in simple form>`.
pub(crate) fn labelled_value(label: &str) -> String {
    format!("{label}:{}", uuid::Uuid::new_v4().simple())
}

/// A fresh owner value: 128 bits from the thread's CSPRNG, as 32 hex digits; with an
/// owner label, `<label>:<UUID v4>` (122 random bits, the format the design names).
pub(crate) fn new_value(label: Option<&str>) -> String {
    if let Some(same) = crate::mutants::constant_value() {
        return same;
    }
    match label {
        Some(label) => labelled_value(label),
        None => format!("{:032x}", rand::rng().random::<u128>()),
    }
}

/// [`new_value`] as the shared string every request of an attempt carries. The unlabelled
/// value is written on the stack and copied once into the `Arc`, where a `String` would
/// be allocated and then copied into a second allocation, on every attempt.
pub(crate) fn new_shared_value(label: Option<&str>) -> Arc<str> {
    if label.is_some() || crate::mutants::constant_value().is_some() {
        return new_value(label).into();
    }
    let mut hex = [0u8; 32];
    let bits = rand::rng().random::<u128>();
    for (i, digit) in hex.iter_mut().enumerate() {
        // Most significant digit first, as `{:032x}` writes them.
        let nibble = (bits >> (4 * (31 - i))) & 0xf;
        *digit = b"0123456789abcdef"[nibble as usize];
    }
    // Hex digits are ASCII, so this never fails; the fallback only keeps it panic-free.
    std::str::from_utf8(&hex).map_or_else(|_| new_value(None).into(), Arc::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_value_is_32_lowercase_hex_digits_and_fresh() {
        let a = new_shared_value(None);
        let b = new_shared_value(None);
        for v in [&a, &b] {
            assert_eq!(v.len(), 32, "{v}");
            assert!(
                v.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
                "{v}"
            );
        }
        assert_ne!(a, b);
        // The same alphabet and width as `new_value`, the format the design names.
        assert_eq!(new_value(None).len(), a.len());
        assert!(new_shared_value(Some("worker-1")).starts_with("worker-1:"));
    }
}
