#!/usr/bin/env bash
# Rebuild an app crate and hot-reload it into a running sandbox, through the daemon.
#
#   scripts/rebuild-and-reload.sh [--release] [--socket PATH] ID [CRATE_DIR]
#
# CRATE_DIR defaults to the workspace's sandbox_app. The daemon (`host serve`) builds the
# crate itself with `cargo build --lib --release --offline` in its build sandbox (README,
# "Builds"), in the build directory of the crate's app key (your uid, CRATE_DIR, the package
# name) under target/apps/builds, kept between reloads, so dependencies are compiled once,
# and reloads the artifact into sandbox ID. Apps are always built in release, like every
# build the host makes; `--release` is accepted so callers can say so, and changes nothing.
# A new crates.io dependency must first be in the daemon's cargo cache: `host deps fetch
# --app CRATE_DIR` (builds are offline).
#
# On success prints one line:
#   reloaded ID: v1 -> v2 in 440 ms (build 350 ms, swap 0.31 ms)
# where "in" is this script's wall time, end to end. When the build fails, cargo's
# diagnostics go to stderr, the exit status is non-zero, and the sandbox keeps serving its
# old version.
#
# The host binary: $HOST_BIN, else the newer of target/release/host and target/debug/host
# (under $CARGO_TARGET_DIR if set), else it is built with `cargo build --release -p host`.
# The socket: --socket, else $SANDBOX_HOST_SOCKET, else the host's default.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    echo "usage: $(basename "$0") [--release] [--socket PATH] ID [CRATE_DIR]" >&2
    exit 2
}

socket_args=()
positional=()
while (($#)); do
    case "$1" in
        --release) ;;
        --socket)
            (($# >= 2)) || usage
            socket_args=(--socket "$2")
            shift
            ;;
        --socket=*) socket_args=(--socket "${1#--socket=}") ;;
        -h | --help) usage ;;
        -*) echo "$(basename "$0"): unknown option $1" >&2; usage ;;
        *) positional+=("$1") ;;
    esac
    shift
done
((${#positional[@]} >= 1 && ${#positional[@]} <= 2)) || usage
id="${positional[0]}"
crate_dir="${positional[1]:-$repo/sandbox_app}"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
started=$(now_ms)

find_host() {
    if [[ -n "${HOST_BIN:-}" ]]; then
        echo "$HOST_BIN"
        return
    fi
    local target="${CARGO_TARGET_DIR:-$repo/target}"
    local release="$target/release/host" debug="$target/debug/host"
    if [[ -x "$release" && (! -x "$debug" || "$release" -nt "$debug") ]]; then
        echo "$release"
    elif [[ -x "$debug" ]]; then
        echo "$debug"
    else
        echo "$(basename "$0"): building the host binary (once)" >&2
        cargo build --quiet --release -p host --manifest-path "$repo/Cargo.toml" >&2
        echo "$release"
    fi
}
host="$(find_host)"

# The host prints the reason (and cargo's diagnostics) to stderr itself. Exit status 1:
# the build or the reload failed; 3: no daemon to talk to.
status=0
report="$("$host" reload "$id" --app "$crate_dir" --json "${socket_args[@]}")" || status=$?
if ((status != 0)); then
    if ((status == 1)); then
        echo "$(basename "$0"): $id keeps its old version" >&2
    fi
    exit "$status"
fi
took=$(($(now_ms) - started))

field() {
    if [[ "$report" =~ \"$1\":[[:space:]]*\"?([A-Za-z0-9_]+) ]]; then
        echo "${BASH_REMATCH[1]}"
    fi
}
status="$(field status)"
from="$(field from_version)"
to="$(field to_version)"
load_us="$(field load_us)"
compile_ms="$(field compile_ms)"
build=""
if [[ -n "$compile_ms" && "$compile_ms" != null ]]; then
    build="build $compile_ms ms, "
fi

if [[ "$status" == no_change ]]; then
    echo "unchanged $id: still v$from in $took ms (${build}same library, nothing to reload)"
else
    swap="$(printf '%d.%02d' $((load_us / 1000)) $((load_us % 1000 / 10)))"
    echo "reloaded $id: v$from -> v$to in $took ms (${build}swap $swap ms)"
fi
