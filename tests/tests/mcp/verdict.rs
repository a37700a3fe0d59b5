//! `report_verdict`: an outside agent's verdict held to the built-in operator's guardrail,
//! against the kernel's figures, over both transports.

use super::*;

#[test]
fn a_verdict_is_checked_against_the_kernel_and_a_contradiction_said() {
    let Some(python) = python_or_skip() else {
        return;
    };
    let d = Serve::start(&["--mcp", "127.0.0.1:0"]);
    let lib = block_on(built("sandbox_app"));
    d.create("v1", &lib, &[]);
    // Calm (3 processes): healthy agrees; critical with a notification contradicts.
    let calm = agent(
        &python,
        Via::Stdio {
            socket: &d.socket,
            write: false,
        },
        &["verdict", "v1"],
    );
    let agrees = ok(&calm["agrees"], "agrees");
    assert_eq!(agrees["accepted"], true, "{agrees}");
    assert_eq!(agrees["contradicts_kernel"], false);
    let contra = ok(&calm["contradicts"], "contradicts");
    assert_eq!(contra["accepted"], false, "{contra}");
    assert_eq!(contra["contradicts_kernel"], true);
    assert_eq!(contra["rule"], "anomaly_state_mismatch");
    let message = contra["message"].as_str().unwrap();
    assert!(
        message.starts_with("the verdict contradicts the kernel: anomaly_state_mismatch"),
        "{message}"
    );
    assert_eq!(ok(&calm["warns"], "warns")["accepted"], false);
    assert!(is_mcp_error(&calm["bad_state"]), "{}", calm["bad_state"]);

    // A spike (more than 10 processes): the same "healthy" now contradicts the kernel.
    d.ok(&["workers", "v1", "--add", "12"]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            d.json(&["usage", "v1"])["processes"].as_u64().unwrap_or(0) > 10
        }),
        "the workers did not start"
    );
    let url = mcp_url(&d);
    let spiking = agent(
        &python,
        Via::Http {
            url: &url,
            token: None,
        },
        &["verdict", "v1"],
    );
    let refused = ok(&spiking["agrees"], "healthy during a spike");
    assert_eq!(refused["accepted"], false, "{refused}");
    assert_eq!(refused["rule"], "anomaly_state_mismatch");
    assert!(
        refused["live"]["processes"].as_u64().unwrap() > 10,
        "{refused}"
    );
    let warned = ok(&spiking["warns"], "warning during a spike");
    assert_eq!(warned["accepted"], true, "{warned}");
}
