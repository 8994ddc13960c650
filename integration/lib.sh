# Shared by integration/test, integration/demo and integration/bench:
# Debian packages and one Docker engine. Source it; it defines and runs
# nothing but functions, except `ensure_packages` and `ensure_engine` which
# the caller invokes. After `ensure_engine`, $ENGINE_HOST is a working engine
# and the EXIT trap stops whatever was started.
# shellcheck shell=bash

declare -F log >/dev/null || log() { printf '%s: %s\n' "${LOG_PREFIX:-pullauth}" "$*" >&2; }

# Commands run first by the EXIT trap (e.g. to stop a demo registry).
CLEANUP_HOOKS=()

# --- packages ---------------------------------------------------------------
# binary -> Debian package
declare -A NEEDED=(
    [dockerd]=docker.io
    [docker]=docker.io
    [containerd]=docker.io
    [docker-registry]=docker-registry
    [busybox]=busybox-static
    [htpasswd]=apache2-utils
    [curl]=curl
    # moto (the AWS emulation of integration/tests/aws.rs) runs in a venv.
    [python3]=python3
    # Not used directly: with these the docker CLI defaults to the `pass`
    # credential store, so every run proves our configs are immune to it.
    [pass]=pass
    [docker-credential-pass]=golang-docker-credential-helpers
    # `promtool check metrics` checks what /metrics serves.
    [promtool]=prometheus
    # The agent binary's linkage (static PIE, RELR) is checked with readelf.
    [readelf]=binutils
)
has() { PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1; }

ensure_packages() {
missing=()
for bin in "${!NEEDED[@]}"; do
    has "$bin" || missing+=("${NEEDED[$bin]}")
done
# Debian ships `python3 -m venv` separately (ensurepip); try it for real.
if has python3; then
    venv_probe=$(mktemp -d "${TMPDIR:-/tmp}/pullauth-venv-probe-XXXXXX")
    python3 -m venv --without-pip "$venv_probe/v" >/dev/null 2>&1 &&
        python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
    rm -rf "$venv_probe"
else
    missing+=(python3-venv)
fi
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [[ $(id -u) == 0 ]]; then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null || { log "apt-get update failed"; return 1; }
        apt-get install -y -qq "${missing[@]}" >/dev/null ||
            { log "apt-get install ${missing[*]} failed"; return 1; }
    else
        log "missing packages: ${missing[*]} (run as root or install them)"
        return 1
    fi
fi
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
}

# --- the pullauth binary ------------------------------------------------------
# build_pullauth [CARGO ARGS...]: builds pullauth (e.g. with --release) and
# prints the executable's path as cargo reports it, so that CARGO_TARGET_DIR,
# a configured build.target-dir and CARGO_BUILD_TARGET all work.
build_pullauth() {
    local messages
    messages=$(cargo build -q --message-format=json-render-diagnostics \
        -p pullauth --bin pullauth "$@") || return 1
    printf '%s\n' "$messages" | python3 -c '
import json, sys
exe = ""
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "pullauth" and m.get("executable"):
        exe = m["executable"]
if not exe:
    sys.exit("cargo reported no pullauth executable")
print(exe)'
}

# cargo_target_dir: the target directory, as cargo reports it.
cargo_target_dir() {
    cargo metadata -q --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

# --- moto -------------------------------------------------------------------
# prepare_moto: creates the venv with moto[server] that the AWS tests use
# (integration/src/moto.rs::ensure_venv, same path and version), unless it
# exists. integration/test runs it in the background while cargo compiles:
# the pip install takes minutes on a fresh machine.
prepare_moto() {
    local version venv build
    version=$(sed -n 's/^pub const MOTO_VERSION: &str = "\(.*\)";/\1/p' integration/src/moto.rs)
    [[ -n $version ]] || { log "cannot read MOTO_VERSION from integration/src/moto.rs"; return 1; }
    venv="${TMPDIR:-/tmp}/pullauth-moto-$version"
    [[ -x $venv/bin/python ]] && return 0
    build="$venv.build-$$"
    rm -rf "$build"
    python3 -m venv "$build" &&
        "$build/bin/python" -m pip install -q --disable-pip-version-check "moto[server]==$version" ||
        { log "installing moto[server]==$version failed"; rm -rf "$build"; return 1; }
    # Another run may have won the race; either venv is complete.
    mv -T "$build" "$venv" 2>/dev/null || rm -rf "$build"
    log "moto $version ready in $venv"
}

# --- docker client config ---------------------------------------------------
# pin_docker_config DIR: creates DIR with a config.json that makes the docker
# CLI keep the credentials of `docker --config DIR login` in that file.
# Without it, a config with no credentials yet gets the machine's default
# store (`pass` when pass and docker-credential-pass are installed, else
# secretservice) and `docker login` fails on an uninitialized pass store.
# `{"auths": {}}` or `"credsStore": ""` do not prevent that; one `auths`
# entry does, here a name no registry can have (.invalid, RFC 2606). An
# existing config.json is left alone. The Rust harness does the same
# (pin_credential_storage in integration/src/engine.rs).
pin_docker_config() {
    mkdir -p "$1" || return 1
    [[ -e $1/config.json ]] ||
        printf '%s\n' '{"auths":{"credentials-stay-in-this-file.invalid":{}}}' >"$1/config.json"
}

# --- docker engine ----------------------------------------------------------
engine_ok() {
    DOCKER_CONFIG="$CLIENT_CONFIG" docker -H "$1" info --format '{{.ServerVersion}}' >/dev/null 2>&1
}

DIR=""
DPID=""
CLIENT_CONFIG=$(mktemp -d "${TMPDIR:-/tmp}/pullauth-it-$$-client-XXXXXX")
pin_docker_config "$CLIENT_CONFIG"

cleanup() {
    local status=$?
    local hook
    for hook in "${CLEANUP_HOOKS[@]}"; do
        eval "$hook" || true
    done
    if [[ -n $DPID ]] && kill -0 "$DPID" 2>/dev/null; then
        log "stopping dockerd (pid $DPID)"
        kill -TERM "$DPID" 2>/dev/null
        for _ in $(seq 150); do
            kill -0 "$DPID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$DPID" 2>/dev/null; then
            log "dockerd ignored SIGTERM; killing it"
            kill -KILL "$DPID" 2>/dev/null
        fi
        wait "$DPID" 2>/dev/null
    fi
    if [[ -n $DIR ]]; then
        # A killed dockerd leaves its data root mounted.
        grep -o " $DIR[^ ]*" /proc/self/mounts 2>/dev/null | sort -r |
            while read -r mnt; do umount -l "$mnt" 2>/dev/null; done
        rm -rf "$DIR"
    fi
    rm -rf "$CLIENT_CONFIG"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_engine() {
host=""
for candidate in "${PULLAUTH_TEST_DOCKER_HOST:-}" "${DOCKER_HOST:-}" unix:///var/run/docker.sock; do
    if [[ -n $candidate ]] && engine_ok "$candidate"; then
        host=$candidate
        log "reusing the docker engine at $host"
        break
    fi
done

if [[ -z $host ]]; then
    # Named like the harness's temp dirs, so a harness sweeps it if this
    # script is killed before its trap runs.
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/pullauth-it-$$-dockerd-XXXXXX")
    host="unix://$DIR/docker.sock"
    # setpriv: dockerd gets SIGKILL if this script dies without its trap.
    wrapper=()
    setpriv --pdeathsig KILL true 2>/dev/null && wrapper=(setpriv --pdeathsig KILL)
    started=$(date +%s%N)
    "${wrapper[@]}" dockerd \
        --host "$host" \
        --data-root "$DIR/data" \
        --exec-root "$DIR/exec" \
        --pidfile "$DIR/docker.pid" \
        --storage-driver vfs \
        --iptables=false \
        --bridge=none \
        </dev/null >"$DIR/dockerd.log" 2>&1 &
    DPID=$!
    until engine_ok "$host"; do
        if ! kill -0 "$DPID" 2>/dev/null; then
            log "dockerd exited early; last lines of its log:"
            tail -n 30 "$DIR/dockerd.log" >&2
            return 1
        fi
        if (( ($(date +%s%N) - started) / 1000000000 >= 60 )); then
            log "dockerd did not answer within 60s; last lines of its log:"
            tail -n 30 "$DIR/dockerd.log" >&2
            return 1
        fi
        sleep 0.1
    done
    log "private dockerd ready at $host in $(( ($(date +%s%N) - started) / 1000000 )) ms"
fi
ENGINE_HOST=$host
}

