//! The `batch` request of the control socket and the lines that answer it.
//!
//! ```text
//! {"op":"batch","action":"create","items":[{"id":"w-1","spec":{...}}],"max_concurrency":8,"timeout_ms":3000}
//! {"op":"batch","action":"destroy","select":{"all":true}}
//! {"op":"batch","action":"call","select":{"prefix":"w-"},"function":"answer","args":null}
//! {"op":"batch","action":"reload","select":{"ids":["w-1","w-2"]},"source":{"library":"/abs/v2.so"}}
//! ```
//!
//! The answer is a stream: a header `{"ok":{"stream":"batch","action":A,"items":N}}`, then one
//! `{"item":{"index":I,"id":ID,"ok":VALUE}}` or `{"item":{"index":I,"id":ID,"error":{...}}}`
//! per item as it completes (in completion order; `index` is its place in the request), then
//! one `{"summary":{...}}`; then the daemon closes the connection. A batch refused as a whole
//! (over the daemon's sandbox cap, a bad selector, a path it may not open) is one `{"error":
//! ...}` line instead, and nothing has started.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::{ReloadSource, SandboxSpec};

/// Most items one batch may name (a bound on what one request makes the daemon hold).
pub const MAX_ITEMS: usize = 10_000;

/// Error kind: the batch would take the daemon past its sandbox cap (`--max-sandboxes`).
pub const TOO_MANY: &str = "too_many_sandboxes";

/// A batch: what to do, to which sandboxes, how many at once, for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRequest {
    /// The operation and its items.
    #[serde(flatten)]
    pub action: BatchAction,
    /// Items in flight at once; the daemon's CPU count when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    /// Time for the whole batch in milliseconds; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// The operation of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum BatchAction {
    /// Create one sandbox per item.
    Create {
        /// The sandboxes to make.
        items: Vec<CreateItem>,
        /// Whether the detector watches them; the daemon's `--watch` when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        watch: Option<bool>,
    },
    /// Destroy the selected sandboxes.
    Destroy {
        /// Which.
        select: Selector,
    },
    /// Call one function in every selected sandbox.
    Call {
        /// Which.
        select: Selector,
        /// Function name.
        function: String,
        /// JSON arguments.
        #[serde(default)]
        args: serde_json::Value,
        /// Each call's timeout; the daemon's default when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_timeout_ms: Option<u64>,
    },
    /// Reload one new version into every selected sandbox (one build, many swaps).
    Reload {
        /// Which.
        select: Selector,
        /// Where the new version comes from (the shape of `control::ReloadWire`).
        source: ReloadSource,
        /// Reload as canaries, one sandbox at a time; the first one rolled back stops the
        /// batch (answers `CanaryReport`s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        canary: Option<crate::canary::CanaryWire>,
    },
}

impl BatchAction {
    /// The action's name (`create`, `destroy`, `call`, `reload`).
    pub fn name(&self) -> &'static str {
        match self {
            BatchAction::Create { .. } => "create",
            BatchAction::Destroy { .. } => "destroy",
            BatchAction::Call { .. } => "call",
            BatchAction::Reload { .. } => "reload",
        }
    }
}

/// One sandbox of a batch create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateItem {
    /// Sandbox id.
    pub id: String,
    /// App, limits, isolation.
    pub spec: SandboxSpec,
}

/// Which sandboxes a batch acts on: exactly one of the fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// These ids, in this order (an unknown one is that item's `not_found`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    /// Every sandbox, sorted by id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// Every sandbox whose id starts with this, sorted by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

impl Selector {
    /// The ids selected among `existing` (sorted), or why the selector is not one.
    pub fn resolve(&self, existing: &[String]) -> Result<Vec<String>, String> {
        match (&self.ids, self.all, &self.prefix) {
            (Some(ids), false, None) => Ok(ids.clone()),
            (None, true, None) => Ok(existing.to_vec()),
            (None, false, Some(p)) if !p.is_empty() => Ok(existing
                .iter()
                .filter(|id| id.starts_with(p.as_str()))
                .cloned()
                .collect()),
            _ => Err("select exactly one of: ids, all, a non-empty prefix".into()),
        }
    }
}

/// One line of a batch's answer after its header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchLine {
    /// One item completed.
    Item(ItemResult),
    /// Every item completed; the last line.
    Summary(Summary),
}

/// The result of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    /// Its place in the request (or in the resolved selection).
    pub index: usize,
    /// The sandbox.
    pub id: String,
    /// What the single operation answers, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<serde_json::Value>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemError>,
}

/// Why an item failed: the single operation's error, in the shape of `control::WireError`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    /// Machine-readable kind (`not_found`, `timeout`, `duplicate_id`, …).
    pub kind: String,
    /// Human-readable reason (may quote the app).
    pub message: String,
}

/// What a whole batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// `create`, `destroy`, `call` or `reload`.
    pub action: String,
    /// Items.
    pub total: usize,
    /// Items that succeeded.
    pub ok: usize,
    /// Items that failed (timed out and cancelled ones included).
    pub failed: usize,
    /// Items that timed out (the batch timeout, or their own).
    pub timed_out: usize,
    /// Wall time of the batch in milliseconds.
    pub ms: u64,
}

/// The paths of a batch the client sends descriptors for, in the order the descriptors
/// come: each distinct app path of a create's items (at most [`crate::control::MAX_FDS`]),
/// or a reload's source path.
pub fn paths(action: &BatchAction) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    match action {
        BatchAction::Create { items, .. } => {
            for item in items {
                let (crate::spec::AppSource::Library(p) | crate::spec::AppSource::Crate(p)) =
                    &item.spec.app;
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
        }
        BatchAction::Reload { source, .. } => match source {
            ReloadSource::Library(p)
            | ReloadSource::Crate(p)
            | ReloadSource::Source {
                crate_dir: Some(p), ..
            } => out.push(p.clone()),
            ReloadSource::Source {
                crate_dir: None, ..
            } => {}
        },
        BatchAction::Destroy { .. } | BatchAction::Call { .. } => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Request;
    use crate::spec::AppSource;
    use serde_json::json;

    #[test]
    fn batch_requests_use_the_documented_shapes() {
        let line = r#"{"op":"batch","action":"destroy","select":{"all":true},"max_concurrency":4}"#;
        let parsed: Request = serde_json::from_str(line).unwrap();
        let Request::Batch(b) = &parsed else {
            panic!("not a batch: {parsed:?}")
        };
        assert_eq!(b.max_concurrency, Some(4));
        assert_eq!(
            b.action,
            BatchAction::Destroy {
                select: Selector {
                    all: true,
                    ..Selector::default()
                }
            }
        );
        let create = Request::Batch(BatchRequest {
            action: BatchAction::Create {
                items: vec![CreateItem {
                    id: "w-1".into(),
                    spec: SandboxSpec::new(AppSource::Library("/l.so".into())),
                }],
                watch: None,
            },
            max_concurrency: None,
            timeout_ms: Some(3000),
        });
        let text = serde_json::to_string(&create).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), create);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["op"], "batch");
        assert_eq!(value["action"], "create");
        assert_eq!(value["timeout_ms"], 3000);
    }

    #[test]
    fn a_selector_names_exactly_one_thing() {
        let existing = ["a-1".to_string(), "a-2".into(), "b-1".into()];
        let prefix = Selector {
            prefix: Some("a-".into()),
            ..Selector::default()
        };
        assert_eq!(prefix.resolve(&existing).unwrap(), ["a-1", "a-2"]);
        assert!(Selector::default().resolve(&existing).is_err());
        let both = Selector {
            all: true,
            prefix: Some("a".into()),
            ..Selector::default()
        };
        assert!(both.resolve(&existing).is_err());
        let empty = Selector {
            prefix: Some(String::new()),
            ..Selector::default()
        };
        assert!(empty.resolve(&existing).is_err());
    }

    #[test]
    fn answer_lines_are_items_then_a_summary() {
        let item = BatchLine::Item(ItemResult {
            index: 2,
            id: "w".into(),
            ok: None,
            error: Some(ItemError {
                kind: "not_found".into(),
                message: "sandbox w not found".into(),
            }),
        });
        assert_eq!(
            serde_json::to_value(&item).unwrap(),
            json!({"item": {"index": 2, "id": "w", "error": {"kind": "not_found", "message": "sandbox w not found"}}})
        );
        let summary = BatchLine::Summary(Summary {
            action: "call".into(),
            total: 3,
            ok: 2,
            failed: 1,
            timed_out: 0,
            ms: 5,
        });
        let text = serde_json::to_string(&summary).unwrap();
        assert_eq!(serde_json::from_str::<BatchLine>(&text).unwrap(), summary);
    }
}
