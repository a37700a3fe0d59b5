#!/usr/bin/env bash
# The plugin author's loop with real dependencies (issue 21): an app crate using serde_json,
# regex and tokio is created in a private `host serve`, then edited (one line) and reloaded
# N times; each edit is also built on the host with `cargo build --release --lib --offline`
# in a target dir of its own (incremental, as an author would), in the same run. Prints one
# row and writes target/bench/app_reload.json:
#
#   app_reload_ms  reload p50 912 ms (host cargo p50 640 ms, 1.43x; goal <= 2x), build dirs 1 (goal 1)
#
#   scripts/bench-app-reload.sh [N]        (N reloads, default 5; run by scripts/bench.sh)
#
# The dependencies must be in the daemon's cargo cache: the script runs `host deps fetch`
# first (it needs the network only when they are not cached yet). Uses target/release/host.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
n="${1:-5}"
host="${HOST_BIN:-$repo/target/release/host}"
[[ -x "$host" ]] || cargo build --quiet --release -p host --manifest-path "$repo/Cargo.toml"

work="$(mktemp -d "${TMPDIR:-/tmp}/bench-app-reload.XXXXXX")"
daemon_pid=""
cleanup() {
    if [[ -n "$daemon_pid" ]]; then
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

app="$work/deps_app"
mkdir -p "$app/src"
cat >"$app/Cargo.toml" <<EOF
[package]
name = "deps_app"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
sandbox_abi = { path = "$repo/sandbox_abi" }
serde_json = "1"
regex = "1"
tokio = { version = "1", features = ["rt", "macros", "sync", "time"] }
EOF
cp "$repo/sandbox_app/src/lib.rs" "$app/src/lib.rs"
cat >>"$app/src/lib.rs" <<'EOF'

/// Uses each dependency, so the app links them.
pub fn deps_in_use() -> usize {
    let v: serde_json::Value = serde_json::json!({ "n": 1 });
    let re = regex::Regex::new("a+b").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async { v.to_string().len() + usize::from(re.is_match("aab")) })
}
EOF

socket="$work/ctl/host.sock"
SANDBOX_APPS_TARGET_DIR="$work/apps" "$host" serve --socket "$socket" \
    --state-dir "$work/state" --pool 0 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 200); do
    [[ -S "$socket" ]] && break
    sleep 0.1
done
h() { "$host" "$@" --socket "$socket"; }

h deps fetch --app "$app" >/dev/null
now_ms() { echo $(($(date +%s%N) / 1000000)); }
edit() { sed -i "s/pub const ANSWER: i64 = [0-9]*;/pub const ANSWER: i64 = $1;/" "$app/src/lib.rs"; }
host_build() {
    CARGO_TARGET_DIR="$work/host-target" cargo build --quiet --release --lib --offline \
        --manifest-path "$app/Cargo.toml"
}

# First builds (dependencies compiled once on each side), not measured.
host_build
h create bench-deps --app "$app" >/dev/null

reloads=()
cargos=()
for i in $(seq "$n"); do
    edit $((100 + i))
    t=$(now_ms)
    host_build
    cargos+=($(($(now_ms) - t)))
    t=$(now_ms)
    h reload bench-deps --app "$app" >/dev/null
    reloads+=($(($(now_ms) - t)))
    [[ "$(h call bench-deps answer)" == "$((100 + i))" ]] || {
        echo "reload $i did not serve the new version" >&2
        exit 1
    }
done
h destroy bench-deps >/dev/null
dirs=$(find "$work/apps/builds" -mindepth 1 -maxdepth 1 -type d | wc -l)

p50() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
r=$(p50 "${reloads[@]}")
c=$(p50 "${cargos[@]}")
ratio=$(awk -v r="$r" -v c="$c" 'BEGIN {printf "%.2f", (c > 0 ? r / c : 0)}')
echo "app_reload_ms  reload p50 $r ms (host cargo p50 $c ms, ${ratio}x; goal <= 2x), build dirs $dirs (goal 1)"
mkdir -p "$repo/target/bench"
cat >"$repo/target/bench/app_reload.json" <<EOF
{"reload_ms": [$(IFS=,; echo "${reloads[*]}")], "host_cargo_ms": [$(IFS=,; echo "${cargos[*]}")],
 "reload_p50_ms": $r, "host_cargo_p50_ms": $c, "ratio": $ratio, "build_dirs": $dirs}
EOF
