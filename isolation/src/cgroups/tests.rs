use std::fs;
use std::path::{Path, PathBuf};

use super::fs::{KernelCgroupFs, read_opt_keyed, read_opt_u64, write_file};
use super::limits::cpu_quota_us;
use super::paths::{self_cgroup_path, under, validate_id};

#[test]
fn ids_are_validated() {
    for ok in ["a", "demo-1", "x_y.z", &"a".repeat(64)] {
        validate_id(ok).unwrap();
    }
    for bad in ["", ".hidden", "a/b", "..", "sp ace", &"a".repeat(65)] {
        assert!(validate_id(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn self_cgroup_parses() {
    let text = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/user.slice\n";
    assert_eq!(
        self_cgroup_path(text, |c| c.is_empty()),
        Some("/user.slice")
    );
    assert_eq!(
        self_cgroup_path(text, |c| c.split(',').any(|x| x == "memory")),
        Some("/process_api/abc")
    );
    assert_eq!(
        self_cgroup_path(text, |c| c.split(',').any(|x| x == "cpuacct")),
        Some("/")
    );
    assert_eq!(under(Path::new("/m"), "/"), PathBuf::from("/m"));
    assert_eq!(under(Path::new("/m"), "/a/b"), PathBuf::from("/m/a/b"));
}

#[test]
fn cpu_quota_is_clamped() {
    assert_eq!(cpu_quota_us(0.5, 100_000), 50_000);
    assert_eq!(cpu_quota_us(2.0, 100_000), 200_000);
    assert_eq!(cpu_quota_us(0.0, 100_000), 1000);
    assert_eq!(cpu_quota_us(f64::NAN, 100_000), 1000);
}

#[test]
fn keyed_and_number_files() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("cpu.stat");
    fs::write(&p, "usage_usec 42\nuser_usec 40\n").unwrap();
    assert_eq!(
        read_opt_keyed(&KernelCgroupFs, &p, "usage_usec").unwrap(),
        Some(42)
    );
    assert_eq!(read_opt_keyed(&KernelCgroupFs, &p, "nope").unwrap(), None);
    assert_eq!(
        read_opt_keyed(&KernelCgroupFs, &d.path().join("absent"), "x").unwrap(),
        None
    );
    let n = d.path().join("pids.max");
    fs::write(&n, "max\n").unwrap();
    assert_eq!(read_opt_u64(&KernelCgroupFs, &n).unwrap(), Some(u64::MAX));
    fs::write(&n, "garbage").unwrap();
    let e = read_opt_u64(&KernelCgroupFs, &n).unwrap_err();
    assert!(e.to_string().contains("pids.max"), "{e}");
    let w = write_file(&KernelCgroupFs, &d.path().join("absent"), "1").unwrap_err();
    assert!(w.to_string().starts_with("write 1 to "), "{w}");
}
