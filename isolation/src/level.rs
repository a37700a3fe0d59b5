//! Isolation level and resource limits of one sandbox.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::IsolationError;

/// How hard a sandbox is isolated.
///
/// * `None`: no isolation at all (a plain child process; rlimits still apply).
/// * `Standard`: every mechanism the machine offers, best effort; what could not be applied is
///   reported with its reason.
/// * `Strict`: like `Standard`, but creation fails with [`IsolationError::Missing`] naming the
///   first mechanism that could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// No isolation.
    None,
    /// Best effort isolation (the default).
    #[default]
    Standard,
    /// All mechanisms or fail.
    Strict,
}

impl Level {
    /// The lowercase name (`none`, `standard`, `strict`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Standard => "standard",
            Level::Strict => "strict",
        }
    }

    /// True for `Standard` and `Strict`.
    pub fn isolates(self) -> bool {
        !matches!(self, Level::None)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = IsolationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Level::None),
            "standard" => Ok(Level::Standard),
            "strict" => Ok(Level::Strict),
            _ => Err(IsolationError::InvalidLevel(s.to_string())),
        }
    }
}

/// Resource limits of one sandbox. `None` means "no limit".
///
/// Sizes deserialize from a number of bytes or a string such as `"256M"` (see [`parse_size`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Memory of the whole sandbox (cgroup `memory.max` / `memory.limit_in_bytes`), bytes.
    #[serde(deserialize_with = "de_size")]
    pub max_memory: Option<u64>,
    /// Processes + threads of the whole sandbox (cgroup `pids.max`; `RLIMIT_NPROC` when non-root).
    pub max_processes: Option<u64>,
    /// CPU bandwidth as a fraction of one core (0.5 = half a core, 2.0 = two cores).
    pub cpu: Option<f64>,
    /// `RLIMIT_NOFILE` per process.
    pub max_open_files: Option<u64>,
    /// `RLIMIT_FSIZE` per process, bytes.
    #[serde(deserialize_with = "de_size")]
    pub max_file_size: Option<u64>,
    /// `RLIMIT_CPU` per process, seconds of CPU time.
    pub cpu_seconds: Option<u64>,
    /// `RLIMIT_AS` per process, bytes of address space.
    #[serde(deserialize_with = "de_size")]
    pub address_space: Option<u64>,
    /// Bytes the sandbox may write to `/work` and `/tmp` together (a capped tmpfs); `None`
    /// means [`crate::root::DEFAULT_DISK_BYTES`].
    #[serde(deserialize_with = "de_size")]
    pub max_disk: Option<u64>,
}

/// Parses a size: plain bytes (`"4096"`) or a number with a binary suffix `K`, `M`, `G`, `T`
/// (case-insensitive, optionally followed by `i`/`iB`/`B`): `"512K"`, `"256M"`, `"1G"`, `"1.5G"`.
pub fn parse_size(s: &str) -> Result<u64, IsolationError> {
    let err = || IsolationError::InvalidSize(s.to_string());
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return Err(err());
    }
    let suffix = suffix.trim().to_ascii_lowercase();
    let shift: u32 = match suffix.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "ki" | "kib" => 10,
        "m" | "mb" | "mi" | "mib" => 20,
        "g" | "gb" | "gi" | "gib" => 30,
        "t" | "tb" | "ti" | "tib" => 40,
        _ => return Err(err()),
    };
    if let Ok(whole) = num.parse::<u64>() {
        return whole.checked_mul(1u64 << shift).ok_or_else(err);
    }
    let frac: f64 = num.parse().map_err(|_| err())?;
    let bytes = frac * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes.round() as u64)
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Num(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Num(n)) => Ok(Some(n)),
        Some(Size::Text(t)) => parse_size(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512K").unwrap(), 512 * 1024);
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size(" 64 MB ").unwrap(), 64 << 20);
        for bad in ["", "M", "12X", "-1", "1.2.3K", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn level_parses_and_serializes() {
        assert_eq!("Strict".parse::<Level>().unwrap(), Level::Strict);
        assert_eq!("none".parse::<Level>().unwrap(), Level::None);
        assert!("hard".parse::<Level>().is_err());
        assert_eq!(
            serde_json::to_string(&Level::Standard).unwrap(),
            "\"standard\""
        );
        let l: Level = serde_json::from_str("\"strict\"").unwrap();
        assert_eq!(l, Level::Strict);
        assert_eq!(Level::default(), Level::Standard);
    }

    #[test]
    fn limits_deserialize_sizes_from_strings_and_numbers() {
        let l: Limits = serde_json::from_str(
            r#"{"max_memory":"256M","max_processes":64,"cpu":0.5,"max_file_size":1048576}"#,
        )
        .unwrap();
        assert_eq!(l.max_memory, Some(256 << 20));
        assert_eq!(l.max_processes, Some(64));
        assert_eq!(l.cpu, Some(0.5));
        assert_eq!(l.max_file_size, Some(1 << 20));
        assert_eq!(l.address_space, None);
        let back: Limits = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        assert!(serde_json::from_str::<Limits>(r#"{"max_memory":"lots"}"#).is_err());
    }
}
