#!/usr/bin/env bash
# The cgroup v2 stage: the project's prebuilt test binaries in a throwaway cgroup v2 guest,
# as root and as an unprivileged user with a delegated subtree.
#
#   scripts/cgroup-v2-test.sh [--no-build] [--keep-logs DIR]
#   scripts/cgroup-v2-test.sh --bench [BENCH ARGS...]
#
# --bench runs the release bench (`target/release/bench`, as scripts/bench.sh does) in the
# guest instead of the tests, as root from the guest's session leaf, and prints its table;
# the summary lands in target/bench/summary-v2.json. Use CGV2_ACCEL=kvm where /dev/kvm works:
# under TCG the figures say nothing about a real machine.
#
# 1. On the host: installs qemu-system-x86 and busybox-static when missing (apt-get), fetches
#    a Debian kernel once into the cache (trixie's 6.12 for Landlock ABI 6, else the default
#    suite's), builds the test binaries (`cargo test --no-run`) and the test apps they load
#    (target/e2e-libs/*.so) so that nothing is compiled in the guest.
# 2. Boots a QEMU guest (TCG; KVM when /dev/kvm works and CGV2_ACCEL=kvm) on the host's own
#    filesystem, shared read-only over 9p with a RAM overlay, with /sys/fs/cgroup a pure
#    cgroup2 hierarchy (`cgroup_no_v1=all`) and `cpu memory pids` enabled, as systemd does.
# 3. Runs every binary in $TESTS twice:
#    * root: each binary alone in a fresh cgroup of its own (a unit's cgroup): the host code
#      moves itself into the `host` leaf and enables the controllers;
#    * uid 1000 (CGV2_UID): in a `Delegate=yes`-style subtree (directory, cgroup.procs,
#      cgroup.threads, cgroup.subtree_control owned by the user), from a session leaf, with
#      SANDBOX_TEST_CGROUP_PARENT (the tests' --cgroup-parent) a cgroup below it.
# 4. Prints per run and binary `passed/failed/skipped`, then the closing line
#    `cgroup v2: N passed, N failed, N skipped`. Exit status 0 only when something ran and
#    nothing failed. No qemu, no kernel, no guest: a loud failure, never a pass.
#
# Skips: a test that cannot run in an environment calls `testkit::skip(reason)`, which prints
# `SKIPPED: <test>: <reason>` and appends it to $SANDBOX_TEST_SKIP_FILE; libtest counts such
# a test as passed, so the skips are subtracted from the passes.
#
# Env: CGV2_CACHE (kernel cache, default ~/.cache/sandbox-host-cgv2), CGV2_KERNEL_DIR (an
# extracted linux-image package to use instead), CGV2_ACCEL (tcg|kvm), CGV2_MEM (MiB, 2048),
# CGV2_TIMEOUT (s, 600), CGV2_UID (1000), CGV2_WHO ("root user": which runs),
# CGV2_NARROW=1 (build only the binaries run here, not the workspace's tests),
# CGV2_ONLY=NAME[,NAME] (only those entries of TESTS, e.g. skills; no daemon check),
# CGV2_VERBOSE=1 (guest console and every test's output).
set -euo pipefail

me=cgroup-v2-test
die() { echo "$me: FAILED: $*" >&2; echo "cgroup v2: 0 passed, 1 failed, 0 skipped ($*)"; exit 1; }
log() { echo "$me: $*" >&2; }

# ---------------------------------------------------------------------------------------------
# The test binaries and filters run in the guest: NAME|PACKAGE|TEST TARGET|libtest args
# (e2e's `sandboxes` binary holds the containment, escape and lifecycle tests as modules: a
# filter per module runs exactly those, each in a run of its own).
# cgroup_real: every cgroup file, limit, usage counter and OOM count on the real kernel.
# namespaces_real: the spawn path's namespaces (user namespace when not root).
# containment: sandboxes made by the manager, limits read back (pids.max, memory, cpu.max),
#   the OOM killer, a double-forked daemon killed with the cgroup; as root also the
#   unprivileged-host and strict cases. Skipped here: none; tests needing root skip as uid 1000.
# escape: the sandbox's own root, ids, store, socket families and disk cap on this kernel
#   (the root-host tests skip as uid 1000).
# lifecycle: destroy (workers, cgroup and directory gone); not the tests that compile app
#   sources (minutes under TCG), nor usage_counts_* (25 worker spawns overrun its 5 s under
#   TCG on a loaded host; cgroup_real covers the usage counters).
# daemon (this script, --daemon-check): `host serve` alone in a cgroup of its own moves itself
#   into the `host` leaf and writes the limits; as root also: from a cgroup shared with a
#   process it did not start, nothing is moved and the report says why.
TESTS=(
  "cgroup_real|isolation|cgroup_real|"
  "namespaces_real|isolation|namespaces_real|"
  "containment|e2e|sandboxes|containment::"
  "escape|e2e|sandboxes|escape::"
  "lifecycle|e2e|sandboxes|lifecycle::destroy_leaves_no_process_and_no_directory"
  "skills|e2e|sandboxes|skills::"
)
# CGV2_ONLY=NAME[,NAME]: run only those entries (and no daemon check), e.g. CGV2_ONLY=skills.
if [ -n "${CGV2_ONLY:-}" ]; then
  only=()
  for t in "${TESTS[@]}"; do
    case ",$CGV2_ONLY," in *",${t%%|*},"*) only+=("$t") ;; esac
  done
  TESTS=("${only[@]}")
fi

# ---------------------------------------------------------------------------------------------
# In the guest (stage 3), run by the guest's init as root: `cgroup-v2-test.sh --in-guest OUT`.
in_guest() {
  set +e   # a failing test binary is a result, not the end of the run
  local out=$1 R=/sys/fs/cgroup U=${CGV2_UID:-1000}
  local D=$R/user-$U
  echo "kernel $(uname -r); $(grep cgroup2 /proc/mounts); controllers: $(cat $R/cgroup.subtree_control)"
  # The user must reach the checkout (CI may clone into a 0700 temp dir): the overlay takes it.
  local d=$CGV2_ROOT
  while [ "$d" != / ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
  if [ -f "$out/bench-args" ]; then
    mkdir -p /tmp/root-home
    # shellcheck disable=SC2046
    ( cd / && exec "$CGV2_ROOT/target/release/bench" \
        --out "$out/summary.json" $(cat "$out/bench-args") ) > "$out/bench.log" 2>&1
    echo "root bench rc=$? secs=0" >> "$out/runs"
    return
  fi
  local line name bin filter
  for who in ${CGV2_WHO:-root user}; do
    for line in $(cat "$out/bins"); do
      name=${line%%|*}; rest=${line#*|}; bin=${rest%%|*}; filter=${rest#*|}
      filter=${filter//,/ }
      local t0 rc; t0=$(cut -d' ' -f1 /proc/uptime)
      local sk=/tmp/skips/$who-$name
      mkdir -p /tmp/skips /tmp/root-home; chown "$U" /tmp/skips
      rm -f "$sk"
      if [ "$bin" = --daemon ] && [ $who = root ]; then
        ( cd / && HOME=/tmp/root-home bash "$CGV2_SELF" --daemon-check root ) > "/tmp/log-$who-$name" 2>&1
        rc=$?
      elif [ "$bin" = --daemon ]; then
        ( cd / && cgv2-asuser bash "$CGV2_SELF" --daemon-check user ) > "/tmp/log-$who-$name" 2>&1
        rc=$?
      elif [ $who = root ]; then
        mkdir -p "$R/t-$name"
        # shellcheck disable=SC2086
        ( echo $BASHPID > "$R/t-$name/cgroup.procs" && cd / && \
          SANDBOX_TEST_SKIP_FILE=$sk SANDBOX_TEST_PREBUILT_LIBS=1 \
          HOME=/tmp/root-home exec "$bin" $filter --nocapture ) > "/tmp/log-$who-$name" 2>&1
        rc=$?
      else
        # The parent is not made here: the host code makes it (mkdir -p) as the user, so the
        # user owns its control files, as with any cgroup made inside a delegated subtree.
        # shellcheck disable=SC2086
        ( cd / && cgv2-asuser env SANDBOX_TEST_SKIP_FILE=$sk \
          SANDBOX_TEST_PREBUILT_LIBS=1 SANDBOX_TEST_CGROUP_PARENT="$D/t-$name" \
          PATH=/usr/local/bin:/usr/bin:/bin "$bin" $filter --nocapture ) > "/tmp/log-$who-$name" 2>&1
        rc=$?
      fi
      local t1; t1=$(cut -d' ' -f1 /proc/uptime)
      cp "/tmp/log-$who-$name" "$out/log-$who-$name"
      touch "$sk"; cp "$sk" "$out/skip-$who-$name"
      echo "$who $name rc=$rc secs=$(awk "BEGIN{print $t1-$t0}")" >> "$out/runs"
      echo "  $who $name: rc=$rc in $(awk "BEGIN{print $t1-$t0}") s (guest uptime $t1)"
    done
  done
}

# In the guest: `host serve` in a cgroup of its own, as under a Delegate=yes unit (root: a
# system service, user: a user service); as root also from a cgroup shared with a process it
# did not start (a terminal's session scope). Prints libtest-style lines so the counts add up.
daemon_check() {
  set +e
  local who=$1 R=/sys/fs/cgroup H=$CGV2_ROOT/target/debug/e2e-host
  local LIB=$CGV2_ROOT/target/e2e-libs/sandbox_app.so pass=0 fail=0 base sock dp rel
  check() {
    if eval "$2"; then echo "test $1 ... ok"; pass=$((pass + 1))
    else echo "test $1 ... FAILED ($2)"; fail=$((fail + 1)); fi
  }
  waitsock() { for _ in $(seq 150); do [ -S "$1" ] && return 0; sleep 0.2; done; return 1; }
  if [ "$who" = root ]; then base=$R/t-daemon; else base=$R/user-$CGV2_UID/t-daemon; fi
  sock=${XDG_RUNTIME_DIR:-/tmp}/daemon-$who.sock
  mkdir -p "$base"
  # Alone in its cgroup (the shell stays outside), like a unit's main process.
  ( echo $BASHPID > "$base/cgroup.procs" && exec "$H" serve --socket "$sock" ) > "/tmp/serve-$who.log" 2>&1 &
  dp=$!
  check daemon_starts 'waitsock "$sock"'
  check daemon_moves_itself_into_the_host_leaf '[ "$(cat /proc/$dp/cgroup)" = "0::${base#"$R"}/host" ]'
  check daemon_creates_a_limited_sandbox \
    '"$H" create t1 --lib "$LIB" --max-memory 64M --max-processes 16 --cpu 0.5 --socket "$sock" >/dev/null'
  # The sandbox's cgroup as the daemon reports it: a pooled create runs in the cgroup made
  # with its prepared runner (`sandbox-pool-...`), beside the idle runners' own.
  local sb; sb=$("$H" info t1 --socket "$sock" | sed -n 's/.*cgroup: v2 .* at \(\/[^ ]*\) (.*/\1/p' | head -1)
  case $sb in "$base"/sandbox-*) ;; *) sb= ;; esac
  check sandbox_cgroup_next_to_the_leaf '[ -n "$sb" ] && [ -n "$(cat "$sb/cgroup.procs")" ]'
  check sandbox_pids_max '[ "$(cat "$sb/pids.max")" = 16 ]'
  check sandbox_memory_max '[ "$(cat "$sb/memory.max")" = 67108864 ]'
  check sandbox_memory_swap_max '[ "$(cat "$sb/memory.swap.max")" = 0 ]'
  check sandbox_cpu_max '[ "$(cat "$sb/cpu.max")" = "50000 100000" ]'
  "$H" info t1 --socket "$sock" | grep -E 'cgroup' | sed 's/^/    /'
  check daemon_destroys_the_sandbox_and_its_cgroup \
    '"$H" destroy t1 --socket "$sock" >/dev/null && [ -n "$sb" ] && ! [ -d "$sb" ]'
  kill "$dp"; wait "$dp"
  if [ "$who" = root ]; then
    # A terminal's scope: the shell (here: a sleep) shares the cgroup; it must stay put.
    base=$R/t-session; mkdir -p "$base"
    ( echo $BASHPID > "$base/cgroup.procs" && exec sleep 300 ) & local other=$!
    sleep 0.2
    ( echo $BASHPID > "$base/cgroup.procs" && exec "$H" serve --socket "$sock" ) > /tmp/serve-session.log 2>&1 &
    dp=$!
    waitsock "$sock"
    "$H" create t2 --lib "$LIB" --max-processes 16 --socket "$sock" > /tmp/create-session.log 2>&1
    check session_scope_process_is_not_moved 'grep -qx "$other" "$base/cgroup.procs" && [ ! -d "$base/host" ]'
    check session_scope_daemon_says_why '"$H" info t2 --socket "$sock" | grep -q "did not start"'
    "$H" destroy t2 --socket "$sock" >/dev/null 2>&1
    kill "$dp" "$other"; wait "$dp" "$other" 2>/dev/null
  fi
  echo "serve log:"; sed 's/^/    /' "/tmp/serve-$who.log" | head -3
  echo "test result: $([ $fail = 0 ] && echo ok || echo FAILED). $pass passed; $fail failed; 0 ignored"
  [ $fail = 0 ]
}

if [ "${1:-}" = --daemon-check ]; then
  daemon_check "$2"
  exit
fi
if [ "${1:-}" = --in-guest ]; then
  in_guest "$2"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# On the host.
build=1; keep=; bench=
while [ $# -gt 0 ]; do
  case $1 in
    --bench) shift; bench="--bench $*"; break ;;
    --no-build) build=0 ;;
    --keep-logs) keep=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
SELF=$ROOT/scripts/cgroup-v2-test.sh
T0=$(date +%s.%N)
cache=${CGV2_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sandbox-host-cgv2}
accel=${CGV2_ACCEL:-tcg}; mem=${CGV2_MEM:-2048}; limit=${CGV2_TIMEOUT:-600}; uid=${CGV2_UID:-1000}

# ---- packages
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
bb=$(command -v busybox || true)
if [ -z "$bb" ] || ! { ldd "$bb" 2>&1 || true; } | grep -q 'not a dynamic'; then
  [ -x /bin/busybox ] && ldd /bin/busybox 2>&1 | grep -q 'not a dynamic' && bb=/bin/busybox || need+=(busybox-static)
fi
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  [ "$(id -u)" = 0 ] || die "${need[*]} missing and not root to install them (apt-get install ${need[*]})"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"; } \
    > /tmp/$me-apt.log 2>&1 || { tail -20 /tmp/$me-apt.log >&2; die "apt-get install ${need[*]} failed"; }
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 still missing"
  bb=$(command -v busybox || echo /bin/busybox)
fi
{ ldd "$bb" 2>&1 || true; } | grep -q 'not a dynamic' || die "a static busybox is needed (busybox-static)"

# ---- kernel: an extracted Debian linux-image package, cached (9p, virtio, overlay as modules)
keep_modules() {  # $1 = extracted package dir: drop all but the kernel and the guest's modules
  # merged /usr (trixie) ships usr/lib/modules
  if [ ! -d "$1/lib/modules" ] && [ -d "$1/usr/lib/modules" ]; then
    rm -rf "$1/lib"; mkdir -p "$1/lib"; mv "$1/usr/lib/modules" "$1/lib/modules"
  fi
  find "$1/lib/modules"/*/kernel -name '*.ko*' | grep -v -E \
    '/(net/9p/9pnet(_virtio)?|fs/9p/9p|fs/netfs/netfs|fs/fscache/fscache|fs/overlayfs/overlay|drivers/virtio/virtio(_ring|_pci[a-z_]*)?)\.ko' \
    | xargs -r rm -f
  rm -rf "$1/usr"
}
fetch_kernel() {  # $1 = suite ("" = the machine's own sources); prints the extracted dir
  local suite=$1 d o=() pkg
  d=$(mktemp -d "$cache/fetch.XXXXXX")
  if [ -n "$suite" ]; then
    local uri
    uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=http://deb.debian.org/debian
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$uri" "$suite" > "$d/$suite.sources"
    o=(-o "Dir::Etc::sourcelist=$d/$suite.sources" -o Dir::Etc::sourceparts=/dev/null
       -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache")
    apt-get "${o[@]}" update -q > "$d/update.log" 2>&1 || { rm -rf "$d"; return 1; }
  fi
  pkg=$(apt-cache "${o[@]}" depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [ -z "$pkg" ] && [ -z "$suite" ]; then
    apt-get update -q > "$d/update.log" 2>&1 || true
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  fi
  [ -n "$pkg" ] || { rm -rf "$d"; return 1; }
  log "downloading $pkg${suite:+ ($suite)} once into $cache"
  ( cd "$d" && apt-get "${o[@]}" download -q "$pkg" > download.log 2>&1 ) || { rm -rf "$d"; return 1; }
  dpkg-deb -x "$d/$pkg"_*.deb "$d/k" && keep_modules "$d/k"
  rm -rf "${cache:?}/$pkg"; mv "$d/k" "$cache/$pkg"; rm -rf "$d"
  echo "$cache/$pkg"
}
kdir=${CGV2_KERNEL_DIR:-}
if [ -z "$kdir" ]; then
  mkdir -p "$cache"
  kdir=$(ls -d "$cache"/linux-image-*/ 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$kdir" ] || kdir=$(fetch_kernel trixie) || kdir=$(fetch_kernel "") \
    || die "cannot fetch a Debian kernel (apt-get download linux-image-amd64's kernel; or set CGV2_KERNEL_DIR)"
fi
kdir=${kdir%/}
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* 2>/dev/null | sort -V | tail -1 || true)
[ -n "$vmlinuz" ] || die "no boot/vmlinuz-* in $kdir"
kver=${vmlinuz##*/vmlinuz-}; moddir=$kdir/lib/modules/$kver
[ -d "$moddir" ] || die "no $moddir"

# ---- the test binaries and the apps they load, built on the host
work=$(mktemp -d "${TMPDIR:-/tmp}/$me.XXXXXX")
chmod 755 "$work"
qpid=
cleanup() { [ -n "$qpid" ] && kill "$qpid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$work/ctl" "$work/out" "$work/initrd"
if [ -n "$bench" ]; then
  log "building the bench (cargo build --release -p bench -p host)"
  cargo build --quiet --release -p bench -p host 2> "$work/build.log" \
    || { tail -30 "$work/build.log" >&2; die "cargo build --release -p bench failed"; }
  echo "${bench#--bench}" > "$work/out/bench-args"
  echo "bench|--bench|" > "$work/out/bins"
  CGV2_WHO=root
else
# The same set as `cargo test --workspace` (so that .ci/run's main run already built them, with
# the same features); CGV2_NARROW=1 builds only the binaries run here.
args=(--workspace)
if [ "${CGV2_NARROW:-0}" = 1 ]; then
  args=()
  for t in "${TESTS[@]}"; do IFS='|' read -r _ pkg tgt _ <<< "$t"; args+=(-p "$pkg" --test "$tgt"); done
fi
[ $build = 1 ] && log "building the test binaries (cargo test --no-run)"
cargo test --no-run "${args[@]}" --message-format=json 2> "$work/build.log" > "$work/build.json" \
  || { tail -30 "$work/build.log" >&2; die "cargo test --no-run failed"; }
: > "$work/out/bins"
for t in "${TESTS[@]}"; do
  IFS='|' read -r name pkg tgt filter <<< "$t"
  exe=$(grep -F "\"name\":\"$tgt\"" "$work/build.json" | grep -F '"test":true' \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
  [ -x "$exe" ] || die "no test binary for $pkg --test $tgt"
  echo "$name|$exe|${filter// /,}" >> "$work/out/bins"
done
[ -z "${CGV2_ONLY:-}" ] && echo "daemon|--daemon|" >> "$work/out/bins"
[ -x target/debug/e2e-host ] || die "no target/debug/e2e-host"
# The test apps (tests/tests/common: `built`), as target/e2e-libs/<name>.so.
mkdir -p target/e2e-libs
for app in sandbox_app:sandbox_app tests/apps/hostile_app:hostile_app \
    tests/apps/faulty_app:faulty_app tests/apps/talker_app:talker_app; do
  dir=${app%%:*}; lib=${app##*:}
  if [ $build = 1 ] || [ ! -f "target/e2e-libs/$lib.so" ]; then
    cargo build -q --lib --release --manifest-path "$dir/Cargo.toml" \
      --target-dir target/apps/cgv2 2>> "$work/build.log" \
      || { tail -30 "$work/build.log" >&2; die "cannot build $dir"; }
    cp "target/apps/cgv2/release/lib$lib.so" "target/e2e-libs/$lib.so.tmp"
    mv "target/e2e-libs/$lib.so.tmp" "target/e2e-libs/$lib.so"
  fi
done
chmod -R o+rX target/e2e-libs
fi
T1=$(date +%s.%N)

# ---- initramfs: static busybox, the modules, stage 1 (mount / over 9p + overlay, switch_root)
ird=$work/initrd
mkdir -p "$ird"/{bin,dev,proc,sys,lower,rw,newroot,mods}
cp "$bb" "$ird/bin/busybox"; ln -s busybox "$ird/bin/sh"
# netfs first: 6.12's 9pnet uses it (and fscache is part of it there)
mods="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p overlay"
for m in $mods; do
  f=$(find "$moddir/kernel" -name "$m.ko*" | head -1)
  [ -n "$f" ] || continue
  case $f in
    *.ko) cp "$f" "$ird/mods/$m.ko" ;;
    *.ko.xz) xz -dc "$f" > "$ird/mods/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" > "$ird/mods/$m.ko" ;;
    *.ko.gz) gzip -dc "$f" > "$ird/mods/$m.ko" ;;
  esac
done
echo "$mods" > "$ird/mods/order"
cat > "$ird/init" <<'STAGE1'
#!/bin/sh
export PATH=/bin
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
for m in $(cat /mods/order); do [ -f /mods/$m.ko ] && insmod /mods/$m.ko; done
fail() { echo "stage1: $*"; poweroff -f; }
o="trans=virtio,version=9p2000.L,msize=262144"
mount -t 9p -o ro,$o,cache=loose hostroot /lower || fail "cannot mount 9p root"
mount -t tmpfs -o mode=755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot || fail "overlay"
mount -t tmpfs -o mode=755 cgv2 /newroot/cgv2 2>/dev/null || { mkdir -p /newroot/cgv2; mount -t tmpfs -o mode=755 cgv2 /newroot/cgv2; }
mkdir -p /newroot/cgv2/ctl
mount -t 9p -o $o,cache=none ctl /newroot/cgv2/ctl || fail "cannot mount 9p ctl"
cp /bin/busybox /newroot/cgv2/busybox
cp /newroot/cgv2/ctl/stage2 /newroot/cgv2/stage2
umount /proc
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /cgv2/busybox sh /cgv2/stage2
STAGE1
chmod +x "$ird/init"

# stage 2 (PID 1 in the overlay root): the cgroup v2 machine systemd would make, then the tests.
cat > "$work/ctl/stage2" <<'STAGE2'
B=/cgv2/busybox
for a in mount mountpoint mkdir ln cut grep chown chmod awk cat hostname ip sync poweroff echo umount; do
  eval "$a() { \$B $a \"\$@\"; }"
done
C=/cgv2/ctl
. $C/env
mountpoint -q /dev || mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
ln -sf /proc/self/fd /dev/fd; ln -sf fd/0 /dev/stdin; ln -sf fd/1 /dev/stdout; ln -sf fd/2 /dev/stderr
# A checkout under /tmp, /run or /var/tmp (a CI clone, say) would vanish under the fresh
# tmpfs mounts below: keep it aside and bind it back.
mkdir -p /cgv2/repo && mount -o bind "$CGV2_ROOT" /cgv2/repo
mount -t tmpfs -o mode=1777 tmp /tmp
mount -t tmpfs -o mode=755 run /run
mount -t tmpfs -o mode=1777 vartmp /var/tmp
if [ ! -e "$CGV2_ROOT/Cargo.toml" ]; then
  mkdir -p "$CGV2_ROOT" && mount -o bind /cgv2/repo "$CGV2_ROOT"
fi
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mkdir -p "$CGV2_OUT"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=mmap out "$CGV2_OUT" || echo "cannot mount $CGV2_OUT"
hostname cgv2
ip link set lo up 2>/dev/null
R=/sys/fs/cgroup
ctrls=""
for c in cpu memory pids io cpuset; do grep -qw $c $R/cgroup.controllers && ctrls="$ctrls +$c"; done
echo $ctrls > $R/cgroup.subtree_control
mkdir -p $R/session.scope
# The delegated subtree (systemd Delegate=yes: these files belong to the user).
U=$CGV2_UID
D=$R/user-$U
mkdir -p $D
echo $ctrls > $D/cgroup.subtree_control
chown $U:$U $D $D/cgroup.procs $D/cgroup.threads $D/cgroup.subtree_control
mkdir -p $D/session.scope
chown -R $U:$U $D/session.scope
uname=$(awk -F: -v u=$U '$3==u{print $1; exit}' /etc/passwd)
if [ -z "$uname" ]; then
  uname=cgv2user
  echo "$uname:x:$U:$U::/home/$uname:/bin/sh" >> /etc/passwd
  grep -q ":$U:" /etc/group || echo "$uname:x:$U:" >> /etc/group
fi
uhome=$(awk -F: -v u=$U '$3==u{print $6; exit}' /etc/passwd)
mkdir -p "$uhome" /run/user/$U /usr/local/bin
chown $U:$U "$uhome" /run/user/$U; chmod 700 /run/user/$U
cat > /usr/local/bin/cgv2-asuser <<ASUSER
#!/bin/sh
echo \$\$ > $D/session.scope/cgroup.procs || exit 126
exec setpriv --reuid=$U --regid=$U --clear-groups --inh-caps=-all \\
  env HOME=$uhome USER=$uname LOGNAME=$uname XDG_RUNTIME_DIR=/run/user/$U "\$@"
ASUSER
chmod 755 /usr/local/bin/cgv2-asuser
export HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 PATH="$CGV2_PATH"
export CGV2_UID CGV2_ROOT CGV2_SELF
echo $$ > $R/session.scope/cgroup.procs
echo "boot $(cut -d' ' -f1 /proc/uptime)" > $C/timing
( cd /; unset -f mount mountpoint mkdir ln cut grep chown chmod awk cat hostname ip sync poweroff echo; \
  exec /bin/bash "$CGV2_SELF" --in-guest "$CGV2_OUT" ) > $C/out 2>&1 < /dev/null
echo $? > $C/rc
echo "end $(cut -d' ' -f1 /proc/uptime)" >> $C/timing
sync
umount "$CGV2_OUT" 2>/dev/null
$B poweroff -f
STAGE2
{
  printf 'CGV2_UID=%q\nCGV2_ROOT=%q\nCGV2_SELF=%q\nCGV2_OUT=%q\nCGV2_PATH=%q\n' \
    "$uid" "$ROOT" "$SELF" "$work/out" "$PATH"
  printf 'export CGV2_WHO=%q\n' "${CGV2_WHO:-root user}"
} > "$work/ctl/env"
: > "$work/ctl/out"
( cd "$ird" && find . | "$bb" cpio -o -H newc 2>/dev/null ) > "$work/initrd.cpio"

# ---- QEMU
case $accel in
  kvm) acc=(-accel kvm -cpu host,-arch-capabilities) ;;
  tcg) acc=(-accel tcg,thread=multi -cpu max) ;;
  *) die "unknown CGV2_ACCEL $accel" ;;
esac
log "booting a cgroup v2 guest (kernel $kver, $accel, $(nproc) cpus, ${mem} MiB)"
append="console=ttyS0 rdinit=/init panic=-1 quiet loglevel=4 cgroup_no_v1=all mitigations=off tsc=reliable"
# An emulated guest can die of its own kernel (a panic under TCG, seen once in several dozen
# boots on this machine class) before it runs anything: that is the machine, not a test, so
# such a boot is tried once more. A guest that ran and failed is never retried.
for attempt in 1 2; do
rm -f "$work/ctl/rc"; find "$work/out" -mindepth 1 ! -name bins ! -name bench-args -delete; : > "$work/ctl/out"
set +e
timeout --foreground -k 5 "$limit" qemu-system-x86_64 "${acc[@]}" -M pc -m "$mem" -smp "$(nproc)" \
  -nodefaults -no-user-config -display none -vga none -vnc none -no-reboot \
  -serial "file:$work/console.log" -kernel "$vmlinuz" -initrd "$work/initrd.cpio" -append "$append" \
  -fsdev "local,id=f0,path=/,security_model=none,readonly=on,multidevs=remap" \
  -device virtio-9p-pci,fsdev=f0,mount_tag=hostroot \
  -fsdev "local,id=fc,path=$work/ctl,security_model=none" -device virtio-9p-pci,fsdev=fc,mount_tag=ctl \
  -fsdev "local,id=fo,path=$work/out,security_model=none,multidevs=remap" \
  -device virtio-9p-pci,fsdev=fo,mount_tag=out \
  </dev/null > "$work/qemu.log" 2>&1 &
qpid=$!
tail -n +1 -f --pid=$qpid "$work/ctl/out" >&2 &
tpid=$!
wait $qpid; qrc=$?; qpid=
wait $tpid 2>/dev/null
set -e
if [ ! -s "$work/ctl/rc" ] && [ "$attempt" = 1 ] && grep -q "Kernel panic" "$work/console.log"; then
  tr -d '\r' < "$work/console.log" | grep -m1 "Kernel panic" >&2
  log "the guest's kernel panicked before the tests finished; booting it once more"
  continue
fi
break
done
T2=$(date +%s.%N)
[ "${CGV2_VERBOSE:-0}" = 1 ] && tr -d '\r' < "$work/console.log" >&2
if [ ! -s "$work/ctl/rc" ]; then
  tr -d '\r' < "$work/console.log" | tail -30 >&2
  grep -v -i warning "$work/qemu.log" >&2 || true
  [ $qrc = 124 ] && die "the guest timed out after ${limit}s"
  die "the guest did not run the tests (qemu rc $qrc)"
fi
[ -n "$keep" ] && { mkdir -p "$keep"; cp "$work"/out/* "$keep"/; }

# ---- the bench: its table, its summary kept beside the host's
if [ -n "$bench" ]; then
  cat "$work/out/bench.log"
  mkdir -p target/bench
  [ -f "$work/out/summary.json" ] && cp "$work/out/summary.json" target/bench/summary-v2.json
  read -r _ _ rcs _ < "$work/out/runs"
  [ "${rcs#rc=}" = 0 ] || die "the bench failed in the guest (${rcs})"
  log "summary: target/bench/summary-v2.json ($(uname -r) host, guest kernel $kver, $accel)"
  exit 0
fi

# ---- results: libtest's "test result:" lines, minus the SKIPPED: lines
tp=0; tf=0; ts=0; bad=0
while read -r who name rcs _; do
  f=$work/out/log-$who-$name
  p=$(grep -h '^test result:' "$f" 2>/dev/null | sed -n 's/.* \([0-9]*\) passed.*/\1/p' | awk '{s+=$1} END{print s+0}')
  x=$(grep -h '^test result:' "$f" 2>/dev/null | sed -n 's/.* \([0-9]*\) failed.*/\1/p' | awk '{s+=$1} END{print s+0}')
  s=$(grep -c '^SKIPPED: ' "$work/out/skip-$who-$name" 2>/dev/null || true)
  s=${s:-0}
  rc=${rcs#rc=}
  if [ "$rc" != 0 ] && [ "$x" = 0 ]; then x=1; fi     # crashed, or never reached a summary
  if [ "$p" = 0 ] && [ "$x" = 0 ]; then x=1; fi       # nothing ran: not a pass
  [ "$s" -gt "$p" ] && s=$p
  echo "$who $name: $((p - s)) passed, $x failed, $s skipped"
  sed 's/^/    /' "$work/out/skip-$who-$name" 2>/dev/null
  if [ "$x" != 0 ] || [ "${CGV2_VERBOSE:-0}" = 1 ]; then
    # No match (a clean run shown because of CGV2_VERBOSE) is not a failure.
    grep -E '^(test .*FAILED|---- |thread .* panicked)|panicked at' -A12 "$f" | head -120 \
      | sed 's/^/    | /' || true
    if [ "$x" != 0 ]; then bad=1; fi
  fi
  tp=$((tp + p - s)); tf=$((tf + x)); ts=$((ts + s))
done < "$work/out/runs"
# Every binary ran in every run, and the guest's script finished.
want=$(( $(wc -l < "$work/out/bins") * $(wc -w <<< "${CGV2_WHO:-root user}") ))
got=$(wc -l < "$work/out/runs" 2>/dev/null || echo 0)
if [ "$got" != "$want" ]; then tf=$((tf + 1)); echo "only $got of $want test runs finished"; fi
grc=$(cat "$work/ctl/rc")
if [ "$grc" != 0 ]; then tf=$((tf + 1)); echo "the guest's script failed (rc $grc)"; fi
timing=$(tr '\n' ' ' < "$work/ctl/timing")
awk -v a="$T0" -v b="$T1" -v c="$T2" -v t="$timing" -v me="$me" \
  'BEGIN{printf "%s: build %.0f s, guest %.0f s (guest uptime: %s), total %.0f s\n", me, b-a, c-b, t, c-a}' >&2
echo "cgroup v2: $tp passed, $tf failed, $ts skipped"
[ "$tf" = 0 ] && [ "$bad" = 0 ]
