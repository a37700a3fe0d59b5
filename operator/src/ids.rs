//! Identifiers and timestamps for snapshots and notifications.

use std::time::SystemTime;

/// A fresh random id: 16 lowercase hex digits.
pub fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Whether `s` looks like an id made by [`new_id`].
pub fn is_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The current UTC time in RFC 3339 with milliseconds, e.g. `2025-01-02T03:04:05.678Z`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_milliseconds_and_utc() {
        let t = now_rfc3339();
        assert_eq!(t.len(), "2025-01-02T03:04:05.678Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
    }

    #[test]
    fn ids_are_16_hex() {
        let a = new_id();
        assert!(is_id(&a), "{a}");
        assert_ne!(a, new_id());
        assert!(!is_id("latest"));
        assert!(now_rfc3339().ends_with('Z'));
    }
}
