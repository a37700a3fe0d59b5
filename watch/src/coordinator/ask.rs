//! The daemon's side of `host ask`: one question to the coordinator about a sandbox or all of
//! them, with the client's provider variables (as `operate`), its insights put in the event
//! stream.

use std::time::Duration;

use proto::ask::{AskRequest, MAX_QUESTION, MAX_SANDBOXES};
use proto::control::{BAD_REQUEST, WireError};
use sandbox::Manager;
use tokio_util::sync::CancellationToken;

use super::{Coordinator, CoordinatorConfig, CoordinatorReport, Providers, Trigger};
use crate::operate::CONFIG_ERROR;
use crate::provider::choose_provider_with;

/// Answers `req`; a bad question or an unknown sandbox is an error, a question the model
/// did not answer is a report without `answer`.
pub async fn ask(manager: &Manager, req: AskRequest) -> Result<CoordinatorReport, WireError> {
    let question = req.question.trim();
    if question.is_empty() || req.question.len() > MAX_QUESTION {
        return Err(WireError::new(
            BAD_REQUEST,
            format!("a question is 1 to {MAX_QUESTION} bytes"),
        ));
    }
    let ids = match &req.id {
        Some(id) => {
            manager.info(id).await.map_err(|e| WireError::from(&e))?;
            vec![id.clone()]
        }
        None => {
            let mut ids = manager.ids();
            ids.sort();
            ids.truncate(MAX_SANDBOXES);
            ids
        }
    };
    let env = req.env.clone();
    let lookup = move |k: &str| env.get(k).cloned();
    let choice = choose_provider_with(req.provider.as_deref(), req.model.as_deref(), &lookup)
        .await
        .map_err(|e| WireError::new(CONFIG_ERROR, e.to_string()))?;
    let providers = match choice.provider {
        Some(p) => Providers::Model(p),
        None => Providers::Mock,
    };
    let members = super::sandbox_members(manager, &ids, true);
    let config = CoordinatorConfig {
        deadline: Duration::from_millis(req.timeout_ms.unwrap_or(30_000)),
        max_iterations: req.max_iterations.unwrap_or(6),
        ..CoordinatorConfig::default()
    };
    let report = Coordinator::new(manager.clone(), members, providers)
        .with_config(config)
        .run(
            Trigger::Question(question.to_string()),
            CancellationToken::new(),
        )
        .await;
    super::report_insights(manager.events(), &report);
    Ok(report)
}
