//! Reading what a sandbox reports: its isolation report (`{"level", "mechanisms": [{
//! "mechanism", "applied", "required", "detail"}]}`) and the errnos the hostile app returns.

use serde_json::Value;

/// The report entry for `name`, the last one if several: (applied, detail).
pub fn mechanism(isolation: &Value, name: &str) -> (bool, String) {
    let entry = isolation["mechanisms"]
        .as_array()
        .unwrap_or_else(|| panic!("no mechanisms in {isolation}"))
        .iter()
        .rev()
        .find(|e| e["mechanism"] == name)
        .unwrap_or_else(|| panic!("no {name} entry in {isolation}"));
    (
        entry["applied"].as_bool().unwrap_or(false),
        entry["detail"].as_str().unwrap_or_default().to_string(),
    )
}

/// The first report entry for `name`.
pub fn first_entry<'a>(isolation: &'a Value, name: &str) -> &'a Value {
    isolation["mechanisms"]
        .as_array()
        .and_then(|m| m.iter().find(|e| e["mechanism"] == name))
        .unwrap_or_else(|| panic!("no {name} entry: {isolation}"))
}

/// Asserts that the report lists `name` as applied, since it is what stops `attack`; returns
/// its detail.
pub fn stopped_by(isolation: &Value, name: &str, attack: &str) -> String {
    let (applied, detail) = mechanism(isolation, name);
    assert!(
        applied,
        "{attack} is stopped by {name}, but the report says it is not applied: {detail}"
    );
    detail
}

/// Every (mechanism, applied) of a report, in order.
pub fn mechanisms(isolation: &Value) -> Vec<(String, bool)> {
    isolation["mechanisms"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|e| {
                    (
                        e["mechanism"].as_str().unwrap_or_default().to_string(),
                        e["applied"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `errno` of a failed attack's result.
pub fn errno(v: &Value) -> i64 {
    v["errno"]
        .as_i64()
        .unwrap_or_else(|| panic!("no errno in {v}"))
}

/// The errnos the attacks end with, as the app reports them.
pub mod errnos {
    #![allow(missing_docs)]
    pub const EPERM: i64 = libc::EPERM as i64;
    pub const ENOENT: i64 = libc::ENOENT as i64;
    pub const EACCES: i64 = libc::EACCES as i64;
    pub const EAGAIN: i64 = libc::EAGAIN as i64;
    pub const EAFNOSUPPORT: i64 = libc::EAFNOSUPPORT as i64;
    pub const EROFS: i64 = libc::EROFS as i64;
    pub const ENOSPC: i64 = libc::ENOSPC as i64;
    pub const ENOSYS: i64 = libc::ENOSYS as i64;
}

/// `CapEff` and friends with no capability at all.
pub const NO_CAPS: &str = "0000000000000000";
