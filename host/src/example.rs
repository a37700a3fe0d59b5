//! A short tour: create a sandbox from the demo app, call `answer`, hot-reload a source
//! change, call it again, destroy.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::sandbox::{AppSource, Manager, ManagerConfig, ReloadSource, SandboxSpec};

/// The demo app crate in the source tree this binary was built from.
pub fn demo_app_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("sandbox_app")
}

/// Runs the tour.
pub async fn run() -> ExitCode {
    match tour().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[example] error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn tour() -> Result<(), crate::sandbox::SandboxError> {
    let manager = Manager::new(ManagerConfig::new("/proc/self/exe"))?;
    let dir = demo_app_dir();
    let info = manager
        .create("example-1", SandboxSpec::new(AppSource::Crate(dir.clone())))
        .await?;
    println!("[example] sandbox created: {} (pid {})", info.id, info.pid);
    let result = async {
        let answer = manager
            .run("example-1", "answer", serde_json::Value::Null, None)
            .await?;
        println!("[example] answer: {answer}");
        let source = std::fs::read_to_string(dir.join("src/lib.rs"))
            .map_err(|e| crate::sandbox::SandboxError::io(&dir, e))?
            .replace("pub const ANSWER: i64 = 41;", "pub const ANSWER: i64 = 42;");
        let report = manager
            .reload(
                "example-1",
                ReloadSource::Source {
                    lib_rs: source,
                    crate_dir: None,
                },
            )
            .await?;
        println!(
            "[example] hot reload: v{} -> v{} (built in {} ms, loaded in {} us)",
            report.from_version,
            report.to_version,
            report.compile_ms.unwrap_or(0),
            report.load_us
        );
        let answer = manager
            .run("example-1", "answer", serde_json::Value::Null, None)
            .await?;
        println!("[example] answer: {answer}");
        Ok(())
    }
    .await;
    manager.destroy("example-1").await?;
    println!("[example] sandbox destroyed");
    result
}
