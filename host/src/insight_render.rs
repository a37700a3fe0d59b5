//! How an insight reads on a terminal (`host ask`, `host anomaly --coordinator`): one line,
//! then its observations. The hypothesis and every cited value are a model's words about
//! what apps did, shown escaped.

use operator::Insight;

use crate::output::untrusted;

/// One insight on one line, then its observations.
pub fn insight_lines(prefix: &str, i: &Insight) -> Vec<String> {
    let grounding = match &i.ungrounded {
        None => "grounded".to_string(),
        Some(why) => format!("UNGROUNDED ({})", untrusted(why)),
    };
    let mut lines = vec![format!(
        "{prefix} insight: {}, {grounding}, confidence {:.2}, state={}{}: {}",
        i.correlation,
        i.confidence,
        i.state,
        if i.sources.is_empty() {
            String::new()
        } else {
            format!(", sandboxes {}", untrusted(&i.sources.join(",")))
        },
        untrusted(&i.hypothesis).quoted()
    )];
    for o in &i.observations {
        lines.push(format!(
            "{prefix}   observed {}={} (snapshot {})",
            untrusted(&o.metric),
            untrusted(&crate::output::json(&o.value)),
            untrusted(&o.snapshot_id)
        ));
    }
    lines
}
