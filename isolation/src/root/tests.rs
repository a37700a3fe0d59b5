use std::path::Path;

use super::*;

fn options(dir: &Path) -> RootOptions {
    RootOptions {
        mountpoint: dir.join("root"),
        runner_exe: std::env::current_exe().unwrap(),
        app_dir: Some(dir.to_path_buf()),
        disk_bytes: DEFAULT_DISK_BYTES,
        owner: Some((1234, 1234)),
        proc: true,
        extra_binds: Vec::new(),
    }
}

#[test]
fn plans_the_layout_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = NewRoot::prepare(&options(dir.path())).unwrap();
    let steps: Vec<&str> = root.ops.iter().map(|(_, w)| w.as_str()).collect();
    let pos = |needle: &str| {
        steps
            .iter()
            .position(|s| s.contains(needle))
            .unwrap_or_else(|| panic!("no step {needle:?} in {steps:#?}"))
    };
    assert_eq!(pos("mount the root tmpfs"), 0);
    assert!(pos("mount the disk tmpfs") < pos("bind the disk's work onto /work"));
    assert!(pos("chown /work to 1234:1234") < pos("bind the disk's work"));
    assert!(pos("onto /runner") < pos("remount /runner read-only"));
    assert!(pos("mount a fresh /proc") < pos("pivot_root"));
    assert_eq!(*steps.last().unwrap(), "remount / read-only");
    assert!(pos("bind /dev/null onto /dev/null") < pos("pivot_root"));
    // Nothing of the host beyond the fixed list.
    for s in steps.iter().filter_map(|s| s.split_once(" onto ")) {
        for hidden in ["/etc/shadow", "/run", "/var", "/home", "/root", "/sys"] {
            let target = s.1;
            assert!(
                target != hidden && !target.starts_with(&format!("{hidden}/")),
                "{s:?}"
            );
        }
    }
    assert!(root.summary().contains("64 MiB tmpfs (16384 inodes)"));
    assert_eq!(root.describe(0), "mount the root tmpfs");
    assert_eq!(root.describe(u16::MAX), "an unknown step");
}

#[test]
fn extra_binds_follow_the_library_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.app_dir = None;
    o.extra_binds = vec![
        Bind {
            src: dir.path().to_path_buf(),
            dst: "/target".into(),
            writable: true,
        },
        Bind {
            src: "/usr".into(),
            dst: "/usr".into(),
            writable: false,
        },
    ];
    let root = NewRoot::prepare(&o).unwrap();
    let steps: Vec<&str> = root.ops.iter().map(|(_, w)| w.as_str()).collect();
    assert!(
        !steps.iter().any(|s| s.ends_with("onto /app")),
        "{steps:#?}"
    );
    assert!(
        steps.contains(&"remount /target nosuid,nodev"),
        "{steps:#?}"
    );
    assert!(steps.contains(&"remount /usr read-only"), "{steps:#?}");
    assert!(root.summary().contains("read-write /target"));
    assert!(root.read_only_paths().contains(&"/usr".to_string()));
    o.extra_binds[0].dst = "relative".into();
    let e = NewRoot::prepare(&o).unwrap_err();
    assert_eq!(
        e.to_string(),
        "relative: an in-sandbox bind target must be absolute"
    );
}

#[test]
fn inode_cap_scales_with_the_disk() {
    assert_eq!(disk_inodes(64 << 20), 16384);
    assert_eq!(disk_inodes(1 << 20), 256);
}

#[test]
fn human_sizes() {
    assert_eq!(human_bytes(64 << 20), "64 MiB");
    assert_eq!(human_bytes(1 << 30), "1 GiB");
    assert_eq!(human_bytes(1000), "1000 B");
}
