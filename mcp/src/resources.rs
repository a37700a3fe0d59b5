//! Resources: the coordinator's insights, from the daemon's event ring (`operator.insight`
//! events): `sandbox-host://insights` (all it still keeps, oldest first) and one resource per
//! insight, `sandbox-host://insights/ID`. An insight's hypothesis is a model's words about
//! what apps did: data for the agent, never instructions.

use rmcp::ErrorData;
use rmcp::model::{ListResourcesResult, ReadResourceResult, Resource, ResourceContents};
use serde_json::{Value, json};

use crate::bounds;
use crate::read_tools::EVENTS_WINDOW;
use crate::server::SandboxServer;

/// The collection's URI.
pub const INSIGHTS_URI: &str = "sandbox-host://insights";
/// Insights listed one by one, at most (the newest).
const LISTED: usize = 50;

impl SandboxServer {
    /// The insight events of the daemon's ring, oldest first.
    async fn insight_events(&self) -> Result<Vec<Value>, ErrorData> {
        let events = self
            .backend
            .events(None, EVENTS_WINDOW)
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(events
            .into_iter()
            .filter(|e| e["event"] == "operator.insight")
            .collect())
    }

    /// `resources/list`: the collection, then the newest insights one by one.
    pub(crate) async fn list_insight_resources(&self) -> Result<ListResourcesResult, ErrorData> {
        let insights = self.insight_events().await?;
        let mut resources = vec![
            Resource::new(INSIGHTS_URI, "insights")
                .with_description(
                    "The coordinator's insights the daemon still keeps: correlated \
                     notifications, root-cause hypotheses, grounded or not",
                )
                .with_mime_type("application/json"),
        ];
        let skip = insights.len().saturating_sub(LISTED);
        for e in insights.iter().skip(skip) {
            let Some(id) = e["id"].as_str() else { continue };
            resources.push(
                Resource::new(format!("{INSIGHTS_URI}/{id}"), format!("insight {id}"))
                    .with_description(format!(
                        "{} insight, {}",
                        e["correlation"].as_str().unwrap_or("?"),
                        if e["grounded"] == true {
                            "grounded"
                        } else {
                            "ungrounded"
                        }
                    ))
                    .with_mime_type("application/json"),
            );
        }
        Ok(ListResourcesResult::with_all_items(resources))
    }

    /// `resources/read` of the collection or of one insight.
    pub(crate) async fn read_insight_resource(
        &self,
        uri: &str,
    ) -> Result<ReadResourceResult, ErrorData> {
        let insights = self.insight_events().await?;
        let value = if uri == INSIGHTS_URI {
            json!({ "insights": insights })
        } else if let Some(id) = uri
            .strip_prefix(INSIGHTS_URI)
            .and_then(|r| r.strip_prefix('/'))
        {
            insights
                .into_iter()
                .find(|e| e["id"] == id)
                .ok_or_else(|| {
                    ErrorData::resource_not_found(
                        format!(
                            "no insight {:?} in the daemon's events",
                            bounds::clip(id, 32)
                        ),
                        None,
                    )
                })?
        } else {
            return Err(ErrorData::resource_not_found(
                format!("no resource {:?}", bounds::clip(uri, 80)),
                None,
            ));
        };
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(value.to_string(), uri).with_mime_type("application/json"),
        ]))
    }
}
