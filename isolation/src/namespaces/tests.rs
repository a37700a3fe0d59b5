use nix::errno::Errno;

use super::*;
use crate::error::IsolationError;
use crate::level::Level;

#[test]
fn flags_per_level() {
    let base = libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    assert_eq!(clone_flags(Level::None, false, false), 0);
    assert_eq!(clone_flags(Level::Standard, false, true), base);
    assert_eq!(clone_flags(Level::Strict, true, true), base);
    assert_eq!(
        clone_flags(Level::Standard, false, false),
        base | libc::CLONE_NEWUSER | libc::CLONE_NEWNET
    );
    assert_eq!(
        clone_flags(Level::Standard, true, false),
        base | libc::CLONE_NEWUSER
    );
}

#[test]
fn child_error_round_trips() {
    let e = ChildError {
        step: ChildStep::Root,
        errno: Errno::EPERM,
        index: 300,
    };
    assert_eq!(ChildError::from_bytes(e.to_bytes()), Some(e));
    assert_eq!(ChildError::from_bytes([0; 8]), None);
    assert!(e.to_string().contains("Root"));
}

#[test]
fn level_none_plans_nothing() {
    let p = plan(Level::None, false, true).unwrap();
    assert_eq!(p.flags, 0);
    assert!(p.netns.is_none());
    assert!(p.entries.iter().all(|e| !e.applied));
}

#[test]
fn errors_name_the_path_and_the_cause() {
    let e = IsolationError::from(NamespaceError::HiddenByPrivateTmp {
        path: "/tmp/app".into(),
    });
    assert_eq!(
        e.to_string(),
        "/tmp/app: lives under /tmp, which the sandbox's private tmpfs would hide; keep sandbox \
         directories elsewhere (e.g. /var/tmp, $XDG_RUNTIME_DIR)"
    );
    let e = NamespaceError::WriteIdMap {
        path: "/proc/7/uid_map".into(),
        value: "0 0 1".into(),
        source: std::io::Error::from_raw_os_error(libc::EPERM),
    };
    assert!(
        e.to_string()
            .starts_with("write \"0 0 1\" to /proc/7/uid_map: Operation not permitted"),
        "{e}"
    );
}
