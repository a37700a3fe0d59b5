#!/usr/bin/env bash
# Build the bench in release and run it: a table on stdout and target/bench/summary.json.
#
#   scripts/bench.sh [--quick]
#
# --quick uses small sample counts (and 100 sandboxes instead of 1000); the whole run
# takes well under a minute. Runs from any cwd; installs nothing. Peers that are not
# installed (`bwrap`: Debian's `bubblewrap`; `unshare`) are reported as skipped. The host
# binary is built too, because the reload-loop measurement drives `host serve` and
# scripts/rebuild-and-reload.sh; the last row comes from scripts/bench-app-reload.sh (an app
# with serde_json, regex, tokio). The N-sandbox rows are two, measured in the same run:
# `sandboxes_1000` (one create per sandbox, all at once) and `sandboxes_1000_batch` (one batch
# create, one batch destroy); `--only-sandboxes` measures just those two.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
unset CARGO_TARGET_DIR

cargo build --quiet --release -p bench -p host --manifest-path "$repo/Cargo.toml"
"$repo/target/release/bench" --out "$repo/target/bench/summary.json" "$@"
# Reloads of an app with real dependencies against the host's own cargo (issue 21).
reloads=10
[[ " $* " == *" --quick "* ]] && reloads=3
"$repo/scripts/bench-app-reload.sh" "$reloads"
