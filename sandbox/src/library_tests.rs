//! Tests of the library store (`library.rs`).

use super::*;

fn libs() -> Libraries {
    Libraries::default()
}

/// A library file with `bytes` in `dir`, opened.
fn lib_of(dir: &Path, bytes: &[u8]) -> LibBytes {
    let path = dir.join(format!("src-{}.so", sha256_hex(bytes)));
    std::fs::write(&path, bytes).unwrap();
    libs().read(&path).unwrap()
}

#[test]
fn only_regular_files_up_to_the_limit_are_libraries() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |path: &Path, what: &str| {
        let err = libs().read(path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(what), "{err}");
    };
    refused(Path::new("/dev/zero"), "a character device");
    refused(dir.path(), "a directory");
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    refused(&fifo, "a FIFO");
    // 2 GB, sparse: refused by its size, without reading a byte.
    let big = dir.path().join("big.so");
    File::create(&big).unwrap().set_len(2 << 30).unwrap();
    let started = std::time::Instant::now();
    refused(&big, "--max-lib-size");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // The same checks hold for a descriptor a client sends.
    let zero = File::open("/dev/zero").unwrap();
    let err = libs()
        .copy_from_fd(&zero, &dir.path().join("z.so"))
        .unwrap_err();
    assert!(err.to_string().contains("character device"), "{err}");
    let err = libs()
        .copy_from_fd(&File::open(&big).unwrap(), &dir.path().join("b.so"))
        .unwrap_err();
    assert!(err.to_string().contains("--max-lib-size"), "{err}");
    assert!(!dir.path().join("b.so").exists());
    let small = dir.path().join("small.so");
    std::fs::write(&small, b"abc").unwrap();
    let copy = dir.path().join("copy.so");
    assert_eq!(
        libs()
            .copy_from_fd(&File::open(&small).unwrap(), &copy)
            .unwrap(),
        3
    );
    assert_eq!(std::fs::read(&copy).unwrap(), b"abc");
}

#[test]
fn a_library_that_changes_after_hashing_is_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_of(&dir.path().join("sandboxes"));
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let lib = lib_of(dir.path(), b"hashed");
    std::fs::write(&lib.path, b"swapped").unwrap();
    let err = libs().install(&store, &app, &lib, 1).unwrap_err();
    assert!(err.to_string().contains("changed while"), "{err}");
    assert_eq!(std::fs::read_dir(&app).unwrap().count(), 0);
    let left: Vec<_> = std::fs::read_dir(&store)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_changed_file_is_hashed_again() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib.so");
    std::fs::write(&lib, b"first").unwrap();
    let one = libs().read(&lib).unwrap();
    assert_eq!(one.sha256, sha256_hex(b"first"));
    assert_eq!(
        libs().read(&lib).unwrap().sha256,
        one.sha256,
        "cached, same content"
    );
    // Rewritten in place (same inode): the cache must not answer with the old hash.
    std::fs::write(&lib, b"second").unwrap();
    let two = libs().read(&lib).unwrap();
    assert_eq!(two.size, 6);
    assert_eq!(two.sha256, sha256_hex(b"second"));
}

#[test]
fn versions_are_links_to_one_read_only_copy_that_goes_with_the_last_link() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_of(&dir.path().join("sandboxes"));
    assert_eq!(store, dir.path().join("sandboxes.libs"));
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    let lib = lib_of(dir.path(), b"x");
    let a = libs().install(&store, &one, &lib, 1).unwrap();
    let b = libs().install(&store, &one, &lib, 2).unwrap();
    let c = libs().install(&store, &two, &lib, 1).unwrap();
    assert_ne!(a, b, "a path per version");
    assert_eq!(std::fs::read(&c).unwrap(), b"x");
    let stored = store.join(format!("{}.so", lib.sha256));
    let meta = std::fs::metadata(&stored).unwrap();
    assert_eq!(meta.nlink(), 4, "the store's copy and three links");
    assert_eq!(std::fs::metadata(&a).unwrap().ino(), meta.ino());
    assert!(meta.permissions().readonly());
    // Still linked: kept. Last link gone: kept too, while among the newest released.
    release(&store);
    assert!(stored.exists());
    for p in [&a, &b, &c] {
        std::fs::remove_file(p).unwrap();
    }
    release(&store);
    assert!(stored.exists(), "the newest unlinked copies are kept");
    // Past KEEP_UNLINKED unlinked copies, the oldest released go (and an empty store).
    for i in 0..KEEP_UNLINKED {
        let other = lib_of(dir.path(), format!("other {i}").as_bytes());
        let p = libs().install(&store, &one, &other, 10 + i as u32).unwrap();
        std::fs::remove_file(&p).unwrap();
        release(&store);
    }
    assert!(!stored.exists(), "the oldest unlinked copy went");
    let kept = std::fs::read_dir(&store).unwrap().count();
    assert_eq!(kept, KEEP_UNLINKED);
    for name in std::fs::read_dir(&store).unwrap().flatten() {
        std::fs::remove_file(name.path()).unwrap();
    }
    release(&store);
    assert!(!store.exists(), "an empty store goes");
}

#[test]
fn a_linked_store_copy_is_hashed_once_not_at_every_link() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_of(&dir.path().join("sandboxes"));
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let libraries = libs();
    let lib = lib_of(dir.path(), b"linked many times");
    libraries.install(&store, &app, &lib, 1).unwrap();
    let stored = store.join(format!("{}.so", lib.sha256));
    // Each link changes the store copy's ctime; that must not make it be hashed again.
    // The hash cache is the witness: hashing the store's copy would enter its path.
    for v in 2..6 {
        libraries.install(&store, &app, &lib, v).unwrap();
    }
    let hashed = libraries.hashes.lock().unwrap().contains_key(&stored);
    assert!(!hashed, "the store's copy was hashed again after a link");
}

#[test]
fn a_store_file_that_does_not_match_its_name_is_replaced_and_none_has_a_store_of_its_own() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = store_of(&dir.path().join("sandboxes"));
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let lib = lib_of(dir.path(), b"good");
    let first = libs().install(&store, &app, &lib, 1).unwrap();
    // Someone who could chmod it rewrote the stored file in place.
    let stored = store.join(format!("{}.so", lib.sha256));
    std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&stored, b"evil").unwrap();
    std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o444)).unwrap();
    let second = libs().install(&store, &app, &lib, 2).unwrap();
    assert_eq!(std::fs::read(&second).unwrap(), b"good");
    assert_eq!(std::fs::read(&stored).unwrap(), b"good");
    drop(first);
    // A `none` sandbox links into a store of its own: never the inode isolated ones map.
    let none_store = none_store_of(&dir.path().join("sandboxes"));
    let own = libs().install(&none_store, &app, &lib, 3).unwrap();
    assert_ne!(
        std::fs::metadata(&own).unwrap().ino(),
        std::fs::metadata(&stored).unwrap().ino()
    );
    assert_eq!(std::fs::read(&own).unwrap(), b"good");
    assert_eq!(std::fs::metadata(&own).unwrap().mode() & 0o777, 0o444);
}

#[test]
fn a_staged_copy_is_not_read_again_to_be_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.so");
    std::fs::write(&src, b"staged bytes").unwrap();
    let libraries = libs();
    let staged = dir.path().join("staged.so");
    libraries
        .copy_from_fd(&File::open(&src).unwrap(), &staged)
        .unwrap();
    let cached = libraries.hashes.lock().unwrap().get(&staged).cloned();
    assert_eq!(
        cached.map(|(_, h)| h),
        Some(sha256_hex(b"staged bytes")),
        "the copy's hash is known without a second read"
    );
    // And a later write to the staged file is still seen (its identity changes).
    std::fs::write(&staged, b"other bytes!").unwrap();
    assert_eq!(
        libraries.read(&staged).unwrap().sha256,
        sha256_hex(b"other bytes!")
    );
}
