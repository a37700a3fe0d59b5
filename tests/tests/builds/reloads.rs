//! The plugin author's loop (issue 21, items 1-3), through a real daemon: a crate with a
//! path dependency inside its own tree (`hex = { path = "vendor/hex" }`) and a `cargo
//! vendor`ed one (`.cargo/config.toml` replacing crates-io with a directory) is created and
//! reloaded ten times after one-line edits; its dependencies are compiled once (their
//! artifacts in the build directory keep their inodes and mtimes) and one build directory
//! is left. A crate's cargo config that asks for anything but source replacement is refused.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use e2e::prelude::*;
use e2e::serve::Serve;

/// An app crate at `dir`: the demo app's source, plus `hex` (a path dependency in
/// `vendor/hex`) and `tinyvend` (from crates-io, replaced by the directory `vreg`, as `cargo
/// vendor` sets it up).
fn vendored_app(dir: &Path) {
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "Cargo.toml",
        &format!(
            "[package]\nname = \"vendored_app\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\n\
             sandbox_abi = {{ path = \"{}\" }}\nhex = {{ path = \"vendor/hex\" }}\n\
             tinyvend = \"0.1\"\n",
            root().join("sandbox_abi").display()
        ),
    );
    let source = std::fs::read_to_string(demo_app().join("src/lib.rs")).unwrap();
    write(
        "src/lib.rs",
        &format!("{source}\npub fn deps() -> usize {{ hex::width() + tinyvend::VALUE }}\n"),
    );
    write(
        "vendor/hex/Cargo.toml",
        "[package]\nname = \"hex\"\nversion = \"0.4.3\"\nedition = \"2021\"\n",
    );
    write("vendor/hex/src/lib.rs", "pub fn width() -> usize { 2 }\n");
    write(
        ".cargo/config.toml",
        "[source.crates-io]\nreplace-with = \"vendored-sources\"\n\n\
         [source.vendored-sources]\ndirectory = \"vreg\"\n",
    );
    write(
        "vreg/tinyvend/Cargo.toml",
        "[package]\nname = \"tinyvend\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write("vreg/tinyvend/src/lib.rs", "pub const VALUE: usize = 7;\n");
    write(
        "vreg/tinyvend/.cargo-checksum.json",
        &format!("{{\"files\":{{}},\"package\":\"{}\"}}", "0".repeat(64)),
    );
}

/// The build directories of crate directory name `name` in the daemon's apps target dir.
fn build_dirs_of(name: &str) -> Vec<PathBuf> {
    let builds = root().join("target/apps/builds");
    let Ok(entries) = std::fs::read_dir(&builds) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&format!("{name}-")))
        })
        .map(|e| e.path())
        .collect()
}

/// The dependency artifacts (`lib<dep>-*.rlib`) of a build directory: name, inode, mtime.
fn dependency_artifacts(build_dir: &Path) -> Vec<(String, u64, i64, i64)> {
    let deps = build_dir.join("target/release/deps");
    let mut out: Vec<_> = std::fs::read_dir(&deps)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let dep = ["libhex-", "libtinyvend-", "libsandbox_abi-"]
                .iter()
                .any(|p| name.starts_with(p));
            let m = e.metadata().ok()?;
            (dep && name.ends_with(".rlib")).then(|| (name, m.ino(), m.mtime(), m.mtime_nsec()))
        })
        .collect();
    out.sort();
    out
}

fn set_answer(dir: &Path, n: i64) {
    let lib = dir.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    let start = text.find("pub const ANSWER: i64 = ").unwrap();
    let end = start + text[start..].find(';').unwrap();
    let changed = format!(
        "{}pub const ANSWER: i64 = {n}{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(&lib, changed).unwrap();
}

#[test]
fn reloads_of_a_vendored_crate_rebuild_only_the_app_and_keep_one_build_directory() {
    let d = Serve::start(&[]);
    let scratch = scratch();
    let name = testkit::unique_id("vendored_app").replace('-', "_");
    let app = scratch.path().join(&name);
    vendored_app(&app);
    let app_arg = app.to_str().unwrap();
    d.ok(&["create", "vend", "--app", app_arg]);
    assert_eq!(d.ok(&["call", "vend", "answer"]), "41");
    let dirs = build_dirs_of(&name);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let built = dependency_artifacts(&dirs[0]);
    assert_eq!(built.len(), 3, "hex, tinyvend and sandbox_abi: {built:?}");

    for i in 0..10 {
        set_answer(&app, 100 + i);
        let report = d.json(&["reload", "vend", "--app", app_arg]);
        assert_eq!(report["status"], "reloaded", "{report}");
        assert_eq!(d.ok(&["call", "vend", "answer"]), (100 + i).to_string());
        // The dependencies were not compiled again: the same files, untouched.
        assert_eq!(dependency_artifacts(&dirs[0]), built, "reload {i}");
    }
    let left = build_dirs_of(&name);
    assert_eq!(left, dirs, "ten reloads left {left:?}");
    d.ok(&["destroy", "vend"]);
}

#[test]
fn a_cargo_config_that_asks_for_more_than_source_replacement_is_refused() {
    let d = Serve::start(&[]);
    let scratch = scratch();
    for (config, named) in [
        (
            "[build]\nrustc-wrapper = \"/bin/sh\"\n",
            "`build` is not allowed",
        ),
        (
            "[target.x86_64-unknown-linux-gnu]\nlinker = \"/tmp/evil\"\n",
            "`target` is not allowed",
        ),
        (
            "[source.v]\ndirectory = \"../../etc\"\n",
            "must be a relative path inside the crate",
        ),
    ] {
        let app = scratch
            .path()
            .join(testkit::unique_id("cfg_app").replace('-', "_"));
        vendored_app(&app);
        std::fs::write(app.join(".cargo/config.toml"), config).unwrap();
        let out = d.host(&["create", "cfg", "--app", app.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(named), "{config}: {stderr}");
        assert!(
            stderr.contains(&format!("{}/.cargo/config.toml", app.display())),
            "{stderr}"
        );
    }
}

#[test]
fn a_workspace_member_builds_with_its_siblings_and_sees_their_edits() {
    let d = Serve::start(&[]);
    let scratch = scratch();
    let ws = scratch.path().join("ws");
    let write = |rel: &str, text: &str| {
        let p = ws.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "Cargo.toml",
        "[workspace]\nmembers = [\"member_app\", \"util\"]\nresolver = \"2\"\n",
    );
    write(
        "member_app/Cargo.toml",
        &format!(
            "[package]\nname = \"member_app\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\n\
             sandbox_abi = {{ path = \"{}\" }}\nutil = {{ path = \"../util\" }}\n",
            root().join("sandbox_abi").display()
        ),
    );
    let source = std::fs::read_to_string(demo_app().join("src/lib.rs"))
        .unwrap()
        .replace(
            "pub const ANSWER: i64 = 41;",
            "pub const ANSWER: i64 = util::VALUE;",
        );
    write("member_app/src/lib.rs", &source);
    write(
        "util/Cargo.toml",
        "[package]\nname = \"util\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write("util/src/lib.rs", "pub const VALUE: i64 = 41;\n");
    let app = ws.join("member_app");
    let app_arg = app.to_str().unwrap();
    d.ok(&["create", "member", "--app", app_arg]);
    assert_eq!(d.ok(&["call", "member", "answer"]), "41");
    write("util/src/lib.rs", "pub const VALUE: i64 = 43;\n");
    d.ok(&["reload", "member", "--app", app_arg]);
    assert_eq!(d.ok(&["call", "member", "answer"]), "43");
    // A sibling the client did not hand over (outside the workspace) is still refused.
    write(
        "util/Cargo.toml",
        "[package]\nname = \"util\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
         [dependencies]\nfar = { path = \"../../far\" }\n",
    );
    std::fs::create_dir_all(scratch.path().join("far/src")).unwrap();
    std::fs::write(
        scratch.path().join("far/Cargo.toml"),
        "[package]\nname = \"far\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    let out = d.host(&["reload", "member", "--app", app_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is outside the source root"), "{stderr}");
    assert_eq!(d.ok(&["call", "member", "answer"]), "43");
    d.ok(&["destroy", "member"]);
}
