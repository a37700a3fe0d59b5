//! The `docs` test binary: every ```console block of the README and of docs/*.md, executed
//! as a reader would type it, its output compared with the documented one, so the examples
//! cannot drift from what the binary does (issue: the README's `reload ID DIR` was not what
//! the CLI accepted).
//!
//! How a file's blocks run (one environment per file, blocks in order, like a reader):
//! - in a scratch directory holding copies of `sandbox_app`, `scripts`, `examples` and
//!   `tests/apps` and
//!   the checkout's own `sandbox_abi` (a symbolic link), with `target/release/host` and `host` on `PATH` being the binary under
//!   test, `XDG_RUNTIME_DIR` (the daemon's state) and `SANDBOX_HOST_SOCKET` private (a
//!   root daemon's default socket is machine-wide) and `HOST_BIN` set for the scripts;
//! - `$ cmd` lines run with `bash -c` (stderr into stdout); `cmd &` starts a background
//!   process and waits for the daemon's socket; `kill %N` stops background process N with
//!   SIGTERM; `cargo …` lines are not run (the test's binaries stand in for them);
//! - the lines after a command are its documented output, compared by [`matching`]; a
//!   command shown without output must exit 0;
//! - a block preceded by `<!-- docs-test: skip REASON -->` is reported SKIPPED with it.
//!
//! Why not trycmd: its `.md` runner starts each command on its own and cannot keep a daemon
//! in the background between commands, which is what these docs describe.

mod matching;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::prelude::*;
use testkit::ChildGuard;

/// Longest a documented command may take (a first build of an app on a loaded machine).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// One ```console block: where it starts, and its commands with their documented output.
struct Block {
    line: usize,
    skip: Option<String>,
    steps: Vec<(String, Vec<String>)>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// The ```console blocks of `text`.
fn blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "```console" {
            i += 1;
            continue;
        }
        // A block in a list item is indented; its lines are read without that indentation.
        let indent = lines[i].len() - lines[i].trim_start().len();
        let skip = i
            .checked_sub(1)
            .and_then(|p| lines[p].trim().strip_prefix("<!-- docs-test: skip"))
            .map(|r| r.trim_end_matches("-->").trim().to_string());
        let mut block = Block {
            line: i + 1,
            skip,
            steps: Vec::new(),
        };
        i += 1;
        while i < lines.len() && lines[i].trim() != "```" {
            let line = lines[i].get(indent..).unwrap_or("");
            match line.strip_prefix("$ ") {
                Some(cmd) => block.steps.push((cmd.to_string(), Vec::new())),
                None => {
                    if let Some((_, output)) = block.steps.last_mut() {
                        output.push(line.to_string());
                    }
                }
            }
            i += 1;
        }
        out.push(block);
    }
    out
}

/// The scratch directory a file's examples run in.
struct Reader {
    dir: tempfile::TempDir,
    background: Vec<ChildGuard>,
}

impl Reader {
    fn new() -> Reader {
        let dir = scratch();
        let root = repo();
        for sub in ["sandbox_app", "scripts", "tests/apps", "examples"] {
            let status = Command::new("cp")
                .args(["-a", "--parents", sub])
                .arg(dir.path())
                .current_dir(&root)
                .status()
                .unwrap();
            assert!(status.success(), "copy {sub}");
        }
        // Built app targets of the copied test apps are not needed (and may be large).
        let _ = std::fs::remove_dir_all(dir.path().join("tests/apps/target"));
        // The host's own `sandbox_abi` (a reader works in the checkout the binary was built
        // from, where `sandbox_app`'s `../sandbox_abi` is that crate).
        std::os::unix::fs::symlink(root.join("sandbox_abi"), dir.path().join("sandbox_abi"))
            .unwrap();
        for bin in ["target/release", "bin"] {
            let d = dir.path().join(bin);
            std::fs::create_dir_all(&d).unwrap();
            std::os::unix::fs::symlink(host(), d.join("host")).unwrap();
        }
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        Reader {
            dir,
            background: Vec::new(),
        }
    }

    fn command(&self, cmd: &str) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(format!("exec 2>&1; {cmd}"))
            .current_dir(d)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    d.join("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("XDG_RUNTIME_DIR", d.join("run"))
            .env("HOST_BIN", d.join("target/release/host"))
            .env("SANDBOX_HOST_SOCKET", self.socket())
            .stdin(Stdio::null());
        c
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/host.sock")
    }

    /// Runs one documented command; `Err` says how it differed from the docs.
    fn step(&mut self, cmd: &str, doc: &[String]) -> Result<(), String> {
        let bare = cmd.split(" #").next().unwrap_or(cmd).trim();
        if bare.starts_with("cargo ") {
            return Ok(());
        }
        if let Some(n) = bare.strip_prefix("kill %") {
            let n: usize = n.parse().map_err(|_| format!("bad job {bare}"))?;
            let job = self
                .background
                .get_mut(n - 1)
                .ok_or(format!("no job {n}"))?;
            return match job.stop_with(libc::SIGTERM, Duration::from_secs(30)) {
                Some(s) if s.success() => Ok(()),
                other => Err(format!("job {n} ended {other:?}")),
            };
        }
        if let Some(job) = bare.strip_suffix('&') {
            let child = self
                .command(&format!("exec {job}"))
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            self.background
                .push(ChildGuard::terminate(child, Duration::from_secs(30)));
            let socket = self.socket();
            return match wait_until(Duration::from_secs(20), || socket.exists()) {
                true => Ok(()),
                false => Err(format!("no socket at {} after `{job}`", socket.display())),
            };
        }
        let mut child = self
            .command(bare)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        });
        let mut guard = ChildGuard::new(child);
        let status = guard
            .wait_exit(COMMAND_TIMEOUT)
            .ok_or(format!("`{bare}` ran past {COMMAND_TIMEOUT:?}"))?;
        drop(guard);
        let out = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
        if doc.iter().all(|l| l.trim().is_empty()) {
            return match status.success() {
                true => Ok(()),
                false => Err(format!("`{bare}` failed ({status}):\n{out}")),
            };
        }
        match matching::matches(doc, &out) {
            true => Ok(()),
            false => Err(format!(
                "`{bare}` printed:\n{out}\nthe docs say:\n{}",
                doc.join("\n")
            )),
        }
    }
}

/// Runs every ```console block of `file` (relative to the repository) in one environment.
fn run_file(file: &str) {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let blocks = blocks(&text);
    let mut reader = Reader::new();
    let mut failures = Vec::new();
    for block in &blocks {
        if let Some(reason) = &block.skip {
            eprintln!("SKIPPED: the block at {file}:{}: {reason}", block.line);
            continue;
        }
        for (cmd, doc) in &block.steps {
            if let Err(e) = reader.step(cmd, doc) {
                failures.push(format!("{file}:{}: {e}", block.line));
                break;
            }
        }
    }
    drop(reader);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The files whose examples run; every Markdown file with a ```console block must be here.
const FILES: &[&str] = &["README.md", "docs/development-loop.md"];

macro_rules! doc_tests {
    ($($name:ident => $file:expr),* $(,)?) => {$(
        #[test]
        fn $name() {
            run_file($file);
        }
    )*};
}

doc_tests! {
    readme_examples_run => "README.md",
    development_loop_examples_run => "docs/development-loop.md",
}

#[test]
fn every_file_with_examples_is_run() {
    let mut files = vec![repo().join("README.md")];
    for e in std::fs::read_dir(repo().join("docs")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "md") {
            files.push(e.path());
        }
    }
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path
            .strip_prefix(repo())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if !blocks(&text).is_empty() {
            assert!(
                FILES.contains(&name.as_str()),
                "{name} has ```console examples that no test runs: add it to FILES and doc_tests!"
            );
        }
    }
}
