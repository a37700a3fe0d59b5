//! What a tenant hands the app, through the library (`sandbox::Manager`): the config reaches
//! the app through the ABI at load and again at every reload (each version is its own
//! library), an app built for ABI version 1 (before `configure`) still loads and serves,
//! and the environment reaches restarted workers too.

use e2e::prelude::*;
use proto::tenant::DataFile;
use sandbox::{AppSource, ReloadSource, SandboxSpec};
use serde_json::{Value, json};

fn spec(lib: std::path::PathBuf) -> SandboxSpec {
    let mut spec = in_test_cgroup(SandboxSpec::new(AppSource::Library(lib)));
    spec.env = vec![("GREETING".into(), "hé".into())];
    spec.config = Some(b"level = 3\n".to_vec());
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_reaches_every_version_and_an_abi_v1_app_still_loads() {
    let m = manager();
    let talker = built("talker_app").await;
    m.create("cfg", spec(talker.clone())).await.unwrap();
    let config = || async { m.run("cfg", "config", Value::Null, None).await.unwrap() };
    assert_eq!(config().await, json!("level = 3\n"));
    // A reload loads another library: it is handed the config too.
    let source = std::fs::read_to_string(test_app("talker_app").join("src/lib.rs")).unwrap();
    let v2 = compiler()
        .build_source(
            &test_app("talker_app"),
            &source.replace("version: \"1.0.0\"", "version: \"2.0.0\""),
        )
        .await
        .unwrap()
        .lib;
    m.reload("cfg", ReloadSource::Library(v2)).await.unwrap();
    let info = m.info("cfg").await.unwrap();
    assert_eq!(
        (info.app.version, info.app.app_version.as_str()),
        (2, "2.0.0")
    );
    assert_eq!(config().await, json!("level = 3\n"));
    let env = m.run("cfg", "env", Value::Null, None).await.unwrap();
    assert!(env.as_str().unwrap().contains("GREETING=hé"), "{env}");

    // Version 1: loads, answers; the config it cannot take is not handed to it.
    let v1 = built("abi_v1_app").await;
    m.create("v1", spec(v1)).await.unwrap();
    assert_eq!(
        m.run("v1", "anything", Value::Null, None).await.unwrap(),
        json!(1)
    );
    m.destroy("v1").await.unwrap();
    m.destroy("cfg").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_outside_data_or_config_and_oversized_inputs_are_refused() {
    let m = manager();
    let talker = built("talker_app").await;
    let file = |dst: &str| DataFile {
        dst: dst.into(),
        bytes: b"x".to_vec(),
    };
    for dst in [
        "/runner",
        "/proc/self/mem",
        "/data/../app/lib.so",
        "/config",
        "/tmp/x",
    ] {
        let mut s = spec(talker.clone());
        s.files = vec![file(dst)];
        let err = m.create("bad-file", s).await.unwrap_err();
        assert_eq!(err.kind(), "bad_request", "{dst}: {err}");
    }
    let mut s = spec(talker.clone());
    s.env = vec![("A=B".into(), "c".into())];
    assert_eq!(
        m.create("bad-env", s).await.unwrap_err().kind(),
        "bad_request"
    );
    let mut s = spec(talker);
    s.config = Some(vec![0; proto::tenant::MAX_CONFIG_BYTES + 1]);
    assert_eq!(
        m.create("bad-cfg", s).await.unwrap_err().kind(),
        "bad_request"
    );
    assert!(m.ids().is_empty());
}
