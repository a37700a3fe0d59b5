//! Prompts: `judge_sandbox` hands an agent the built-in operator's instructions for one
//! sandbox, with the MCP tools that stand for the operator's own.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{PromptMessage, Role};
use rmcp::{prompt, prompt_router};
use schemars::JsonSchema;
use serde::Deserialize;
use watch::skill::{Focus, PROCESS_THRESHOLD, process_rule, system_prompt_for};

use crate::bounds;
use crate::server::SandboxServer;

/// Which sandbox to judge, and for what.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct JudgeArgs {
    /// The sandbox id.
    pub sandbox_id: String,
    /// `anomaly` (process spikes, the default) or `status`.
    #[serde(default)]
    pub focus: Option<String>,
}

#[prompt_router(vis = "pub(crate)")]
impl SandboxServer {
    /// The operator's instructions for judging one sandbox.
    #[prompt(
        name = "judge_sandbox",
        description = "Judge one sandbox's health as the built-in operator does: take its snapshot, decide, and report the verdict with report_verdict (checked against the kernel)."
    )]
    async fn judge_sandbox(
        &self,
        Parameters(a): Parameters<JudgeArgs>,
    ) -> Result<Vec<PromptMessage>, rmcp::ErrorData> {
        bounds::sandbox_id(&a.sandbox_id)
            .map_err(|e| rmcp::ErrorData::invalid_params(e.to_string(), None))?;
        let focus = match a.focus.as_deref() {
            None | Some("anomaly") => Focus::Anomaly,
            Some("status") => Focus::Status,
            Some(other) => {
                return Err(rmcp::ErrorData::invalid_params(
                    format!(
                        "focus: {:?} is not anomaly or status",
                        bounds::clip(other, 32)
                    ),
                    None,
                ));
            }
        };
        let id = &a.sandbox_id;
        let instructions = system_prompt_for(focus, id, &process_rule(PROCESS_THRESHOLD));
        let check = match focus {
            Focus::Anomaly => "anomaly",
            Focus::Status => "plumbing",
        };
        Ok(vec![PromptMessage::new_text(
            Role::User,
            format!(
                "{instructions}\n\nHere the operator's tools are MCP tools: take_snapshot() is \
                 `snapshot` with sandbox_id \"{id}\"; set_state and send_notification together \
                 are one call to `report_verdict` (sandbox_id \"{id}\", state, summary, \
                 notifications, check \"{check}\"). Its answer tells you whether the kernel's \
                 figures contradict your verdict."
            ),
        )])
    }
}
