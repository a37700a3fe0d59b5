//! A test app for the plugin author's loop: it prints (stdout and stderr, from the app
//! process and from its worker), and reports what it was given: an environment variable, its
//! config (through the ABI) and a read-only data file. It also floods its stdout on demand:
//! the host must keep its log, its memory and its disk within their bounds.

use std::io::Write;

/// `say`: prints its argument (a JSON string) once to stdout and once to stderr.
fn say(args: &str) -> Result<String, String> {
    let text: String = serde_json_lite(args)?;
    println!("out: {text}");
    eprintln!("err: {text}");
    Ok("true".into())
}

/// The argument as a plain string: a JSON string's contents, unescaped for the few escapes
/// the tests use (this crate has no serde).
fn serde_json_lite(args: &str) -> Result<String, String> {
    let inner = args
        .trim()
        .strip_prefix('"')
        .and_then(|a| a.strip_suffix('"'))
        .ok_or_else(|| format!("want a JSON string, got {args}"))?;
    Ok(inner
        .replace("\\u001b", "\u{1b}")
        .replace("\\r", "\r")
        .replace("\\n", "\n")
        .replace("\\\"", "\"")
        .replace("\\\\", "\\"))
}

/// A string as a JSON string (control characters as \u escapes).
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `env`: the app process's environment, as `K=V` lines sorted.
fn env(_args: &str) -> Result<String, String> {
    let mut vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    vars.sort();
    Ok(quote(&vars.join("\n")))
}

/// `config`: the config bytes the runner handed the app, as text (null when none).
fn config(_args: &str) -> Result<String, String> {
    Ok(match sandbox_abi::config() {
        Some(bytes) => quote(&String::from_utf8_lossy(bytes)),
        None => "null".into(),
    })
}

/// `read`: the contents of a file (argument: its path as a JSON string).
fn read(args: &str) -> Result<String, String> {
    let path = serde_json_lite(args)?;
    std::fs::read_to_string(&path)
        .map(|t| quote(&t))
        .map_err(|e| format!("read {path}: {e}"))
}

/// `write`: tries to overwrite a file; the error when it cannot.
fn write(args: &str) -> Result<String, String> {
    let path = serde_json_lite(args)?;
    std::fs::write(&path, b"overwritten")
        .map(|()| "true".into())
        .map_err(|e| format!("write {path}: {e}"))
}

/// `run`: runs a program (argument: its path); the error when it cannot.
fn run(args: &str) -> Result<String, String> {
    let path = serde_json_lite(args)?;
    std::process::Command::new(&path)
        .output()
        .map(|o| quote(&String::from_utf8_lossy(&o.stdout)))
        .map_err(|e| format!("run {path}: {e}"))
}

/// `flood`: writes the argument's number of MiB to stdout, in lines of 1000 bytes, as fast
/// as the pipe takes them.
fn flood(args: &str) -> Result<String, String> {
    let mib: usize = args.trim().parse().map_err(|e| format!("{args}: {e}"))?;
    let line = format!("{}\n", "F".repeat(999));
    let mut out = std::io::stdout().lock();
    for _ in 0..mib * 1049 {
        out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok("true".into())
}

/// `long_line`: one line of the argument's number of bytes on stdout.
fn long_line(args: &str) -> Result<String, String> {
    let n: usize = args.trim().parse().map_err(|e| format!("{args}: {e}"))?;
    println!("{}", "L".repeat(n));
    Ok("true".into())
}

/// The worker: says hello on both streams with the variable it was given, then idles.
fn worker(index: u32) -> i32 {
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "<unset>".into());
    println!("worker {index} out: GREETING={greeting}");
    eprintln!("worker {index} err: GREETING={greeting}");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

sandbox_abi::export_app! {
    name: "talker_app",
    version: "1.0.0",
    functions: {
        "say" => say,
        "env" => env,
        "config" => config,
        "read" => read,
        "write" => write,
        "run" => run,
        "flood" => flood,
        "long_line" => long_line,
    },
    worker: worker,
    initial_workers: 1,
}
