//! What the kernel says of a sandbox's cgroup beyond its usage: CPU throttling (`cpu.stat`)
//! and pressure stall information (`*.pressure`), each where the cgroup has it. Read from
//! cgroupfs only, never from anything the sandbox wrote.
//!
//! * Throttling: v2 `cpu.stat` `nr_periods`, `nr_throttled`, `throttled_usec`; v1 the cpu
//!   hierarchy's `cpu.stat` `nr_periods`, `nr_throttled`, `throttled_time` (nanoseconds).
//! * Pressure: v2 `cpu.pressure`, `memory.pressure`, `io.pressure` (`some` and `full` lines:
//!   `avg10`, `avg60`, `avg300` in percent, `total` in microseconds). A v1 hierarchy has no
//!   per-cgroup pressure files (`memory.pressure_level` is an event source, not PSI): then
//!   each resource says why it is not available.

use serde::{Deserialize, Serialize};

use super::cgroup::{Cgroup, CgroupVersion};
use super::error::Result;
use super::fs::{read_opt_keyed, read_string};

/// CPU throttling counters of a cgroup with a CPU quota (or without: then they stay 0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuThrottling {
    /// Enforcement periods that have elapsed (`nr_periods`).
    pub nr_periods: u64,
    /// Periods in which the cgroup was throttled (`nr_throttled`).
    pub nr_throttled: u64,
    /// Total time throttled, microseconds (`throttled_usec`; v1 `throttled_time` / 1000).
    pub throttled_usec: u64,
    /// The file the figures come from, e.g. `/sys/fs/cgroup/cpu/…/cpu.stat`.
    pub source: String,
}

/// One line of a pressure file: the share of wall time in which some (or all) tasks of the
/// cgroup stalled on the resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PressureLine {
    /// Percent over the last 10 s.
    pub avg10: f64,
    /// Percent over the last 60 s.
    pub avg60: f64,
    /// Percent over the last 300 s.
    pub avg300: f64,
    /// Total stall time, microseconds.
    pub total_usec: u64,
}

/// One resource's pressure (`some`, and `full` where the kernel reports it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    /// Some task stalled.
    pub some: PressureLine,
    /// Every non-idle task stalled at once (absent for cpu on older kernels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<PressureLine>,
}

/// Pressure of one resource, or why the cgroup has none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PressureReading {
    /// The kernel's figures.
    Available(Pressure),
    /// Why there is no figure (cgroup v1, PSI disabled, no such file).
    NotAvailable(String),
}

/// The cgroup's throttling and pressure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CgroupStats {
    /// v1 or v2.
    pub version: CgroupVersion,
    /// CPU throttling; `None` when the cgroup has no cpu controller.
    pub throttling: Option<CpuThrottling>,
    /// `cpu.pressure`.
    pub cpu_pressure: PressureReading,
    /// `memory.pressure`.
    pub memory_pressure: PressureReading,
    /// `io.pressure`.
    pub io_pressure: PressureReading,
}

/// What a v1 cgroup says instead of pressure figures.
pub const V1_NO_PRESSURE: &str = "not available: cgroup v1 has no per-cgroup pressure files \
     (PSI per cgroup needs cgroup v2)";

impl Cgroup {
    /// Reads throttling and pressure (see the module docs).
    pub fn stats(&self) -> Result<CgroupStats> {
        let fs = &*self.fs;
        match self.version() {
            CgroupVersion::V2 => {
                let d = &self.dirs[0].path;
                let stat = d.join("cpu.stat");
                let throttling = match read_opt_keyed(fs, &stat, "nr_periods")? {
                    Some(nr_periods) => Some(CpuThrottling {
                        nr_periods,
                        nr_throttled: read_opt_keyed(fs, &stat, "nr_throttled")?.unwrap_or(0),
                        throttled_usec: read_opt_keyed(fs, &stat, "throttled_usec")?.unwrap_or(0),
                        source: stat.display().to_string(),
                    }),
                    None => None,
                };
                let read = |name: &str| {
                    let path = d.join(name);
                    match read_string(fs, &path) {
                        Ok(text) => match parse_pressure(&text) {
                            Some(p) => PressureReading::Available(p),
                            None => PressureReading::NotAvailable(format!(
                                "{} does not read as pressure: {:?}",
                                path.display(),
                                text.chars().take(80).collect::<String>()
                            )),
                        },
                        Err(e) => PressureReading::NotAvailable(format!("not available: {e}")),
                    }
                };
                Ok(CgroupStats {
                    version: CgroupVersion::V2,
                    throttling,
                    cpu_pressure: read("cpu.pressure"),
                    memory_pressure: read("memory.pressure"),
                    io_pressure: read("io.pressure"),
                })
            }
            CgroupVersion::V1 => {
                let throttling = match self.dir_with("cpu") {
                    Some(d) => {
                        let stat = d.path.join("cpu.stat");
                        match read_opt_keyed(fs, &stat, "nr_periods")? {
                            Some(nr_periods) => Some(CpuThrottling {
                                nr_periods,
                                nr_throttled: read_opt_keyed(fs, &stat, "nr_throttled")?
                                    .unwrap_or(0),
                                throttled_usec: read_opt_keyed(fs, &stat, "throttled_time")?
                                    .unwrap_or(0)
                                    / 1000,
                                source: stat.display().to_string(),
                            }),
                            None => None,
                        }
                    }
                    None => None,
                };
                let none = || PressureReading::NotAvailable(V1_NO_PRESSURE.to_string());
                Ok(CgroupStats {
                    version: CgroupVersion::V1,
                    throttling,
                    cpu_pressure: none(),
                    memory_pressure: none(),
                    io_pressure: none(),
                })
            }
        }
    }
}

/// Parses a PSI file (`/proc/pressure/*`, a v2 cgroup's `*.pressure`):
/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and optionally a `full` line. `None`
/// when there is no well-formed `some` line.
pub fn parse_pressure(text: &str) -> Option<Pressure> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let which = parts.next();
        let mut out = PressureLine::default();
        let mut seen = 0;
        for part in parts {
            let (key, value) = part.split_once('=')?;
            match key {
                "avg10" => out.avg10 = value.parse().ok()?,
                "avg60" => out.avg60 = value.parse().ok()?,
                "avg300" => out.avg300 = value.parse().ok()?,
                "total" => out.total_usec = value.parse().ok()?,
                _ => continue,
            }
            seen += 1;
        }
        if seen < 4 {
            continue;
        }
        match which {
            Some("some") => some = Some(out),
            Some("full") => full = Some(out),
            _ => {}
        }
    }
    Some(Pressure { some: some?, full })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_files_parse() {
        let p = parse_pressure(
            "some avg10=70.86 avg60=22.82 avg300=10.29 total=7111239669\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        assert_eq!(p.some.avg10, 70.86);
        assert_eq!(p.some.total_usec, 7_111_239_669);
        assert_eq!(p.full.unwrap().avg300, 0.0);
        let cpu_only = parse_pressure("some avg10=1.00 avg60=2.00 avg300=3.00 total=4\n").unwrap();
        assert!(cpu_only.full.is_none());
        assert!(parse_pressure("").is_none());
        assert!(parse_pressure("some avg10=x avg60=1 avg300=1 total=1").is_none());
        assert!(parse_pressure("garbage\n").is_none());
    }
}
