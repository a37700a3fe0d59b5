//! Files: the sandbox's own root hides the host's files, its mounts are read-only where code
//! could be planted, and Landlock stands behind the root.

use std::path::Path;

use e2e::prelude::*;
use e2e::report::errnos::{EACCES, ENOENT, EROFS};
use e2e::report::{errno, stopped_by};
use sandbox::{Level, Limits};
use serde_json::json;

use super::{call, world_readable_secret};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_secret_outside_the_allowed_paths_fails() {
    let m = manager();
    let (_secrets, secret) = world_readable_secret();

    let info = hostile(&m, "secret", Limits::default(), Level::Standard).await;
    stopped_by(
        &info.isolation,
        "root",
        "reading outside the sandbox's root",
    );
    for path in [
        secret.as_path(),
        Path::new("/etc/passwd"),
        Path::new("/etc/shadow"),
        &info.dir.join("runner.log"),
    ] {
        let r = call(&m, "secret", "read_file", json!({ "path": path })).await;
        assert_eq!(
            errno(&r["read"]),
            ENOENT,
            "{} is not in the sandbox's root: {r}",
            path.display()
        );
        // Its directory is not there either, or (/etc, which holds only the loader's cache)
        // Landlock refuses to list it.
        assert!([ENOENT, EACCES].contains(&errno(&r["list_dir"])), "{r}");
    }
    assert!(!format!("{info:?}").contains("the host's secret"));
    // Landlock, behind the root: /dev/zero is world-writable on the host, the rules make it
    // read-only.
    stopped_by(&info.isolation, "landlock", "writing a read-only device");
    let r = call(&m, "secret", "write_file", json!({"path": "/dev/zero"})).await;
    assert_eq!(errno(&r), EACCES, "Landlock: /dev/zero is read-only: {r}");

    // Control: the sandbox's own directory is readable, and the host sees it through the
    // runner's root.
    std::fs::write(work_dir(&info).join("own.txt"), "mine").unwrap();
    let r = call(&m, "secret", "read_file", json!({"path": "/work/own.txt"})).await;
    assert_eq!(r["read"]["content"], "mine", "{r}");
    m.destroy("secret").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_outside_the_private_directory_fails() {
    let m = manager();
    // Mode 0777: file permissions would let anyone write here.
    let outside = scratch_with_mode(0o777);
    let info = hostile(&m, "write", Limits::default(), Level::Standard).await;
    stopped_by(
        &info.isolation,
        "root",
        "writing outside the sandbox's root",
    );
    for target in [outside.path().join("pwned"), info.dir.join("pwned")] {
        let r = call(&m, "write", "write_file", json!({ "path": target })).await;
        assert_eq!(
            errno(&r),
            ENOENT,
            "{} is not reachable: {r}",
            target.display()
        );
        assert!(!target.exists(), "{} was written", target.display());
    }
    // The root itself, the app directory (where a reload picks up code) and the system
    // libraries are read-only mounts.
    for planted in ["/pwned", "/app/pwned.so", "/usr/lib/pwned.so", "/runner"] {
        let r = call(&m, "write", "write_file", json!({ "path": planted })).await;
        assert_eq!(errno(&r), EROFS, "{planted} is read-only: {r}");
    }
    assert!(!info.dir.join("app").join("pwned.so").exists());
    // Control: the private directory and /tmp are writable.
    for own in ["/work/mine.txt", "/tmp/mine.txt"] {
        let r = call(&m, "write", "write_file", json!({ "path": own })).await;
        assert_eq!(r["ok"], true, "{own}: {r}");
    }
    assert_eq!(
        std::fs::read_to_string(work_dir(&info).join("mine.txt")).unwrap(),
        "written from inside the sandbox"
    );
    m.destroy("write").await.unwrap();
}
