#!/usr/bin/env bash
# Installs and starts a Docker engine with gVisor (runsc) registered, for CI and dev machines
# of the kind described in design/MACHINE.md (root, Debian bookworm, no engine running).
#
# Idempotent: every step checks before it acts, so running it twice is harmless.
#   1. apt-get install docker.io runsc debootstrap   (only what is missing)
#   2. /etc/docker/daemon.json gets a "runsc" runtime with runtimeArgs ["--network=none"]
#      (without it runsc refuses to start: "cannot run with network enabled in root network
#      namespace"); other keys in an existing daemon.json are kept.
#   3. dockerd is started in the background (log: $DOCKERD_LOG, default /var/log/toolcell-dockerd.log)
#      unless an engine already answers; a running dockerd gets SIGHUP when its runtimes changed.
#   4. waits for /var/run/docker.sock and `docker info`, and checks that runsc is listed.
#
# Exit status: 0 when the engine answers with runsc registered, non-zero otherwise.
# Needs root. Does not build images: see sandboxes/base/build.sh and `toolcell images build`.
set -euo pipefail

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/toolcell-dockerd.log}
DAEMON_JSON=/etc/docker/daemon.json
SOCK=/var/run/docker.sock
WAIT_SECONDS=${WAIT_SECONDS:-60}

say() { printf 'setup-docker: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  say "must run as root (installs packages and starts dockerd)"
  exit 1
fi

# 1. packages -------------------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v runsc >/dev/null 2>&1 || missing+=(runsc)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
RUNSC=$(command -v runsc)

# 2. runsc runtime in daemon.json ----------------------------------------------------------
mkdir -p "$(dirname "$DAEMON_JSON")"
changed=0
desired_runtime="{\"path\":\"$RUNSC\",\"runtimeArgs\":[\"--network=none\"]}"
if [ ! -s "$DAEMON_JSON" ]; then
  printf '{\n  "runtimes": {\n    "runsc": %s\n  }\n}\n' "$desired_runtime" > "$DAEMON_JSON"
  changed=1
else
  # Merge with whatever JSON tool exists; jq is preferred, node (any version) as fallback.
  if command -v jq >/dev/null 2>&1; then
    current=$(jq -c '.runtimes.runsc // empty' "$DAEMON_JSON")
    if [ "$current" != "$(jq -cn --argjson r "$desired_runtime" '$r')" ]; then
      tmp=$(mktemp)
      jq --argjson r "$desired_runtime" '.runtimes.runsc = $r' "$DAEMON_JSON" > "$tmp"
      cat "$tmp" > "$DAEMON_JSON" && rm -f "$tmp"
      changed=1
    fi
  elif command -v node >/dev/null 2>&1; then
    out=$(node -e '
      const fs = require("fs"); const [file, want] = process.argv.slice(1);
      const cfg = JSON.parse(fs.readFileSync(file, "utf8") || "{}");
      const r = JSON.parse(want);
      if (JSON.stringify(cfg.runtimes?.runsc) === JSON.stringify(r)) { console.log("same"); process.exit(0); }
      cfg.runtimes = {...cfg.runtimes, runsc: r};
      fs.writeFileSync(file, JSON.stringify(cfg, null, 2) + "\n"); console.log("changed");
    ' "$DAEMON_JSON" "$desired_runtime")
    [ "$out" = changed ] && changed=1
  else
    say "$DAEMON_JSON exists and neither jq nor node is available to merge it; add: \"runtimes\": {\"runsc\": $desired_runtime}"
    exit 1
  fi
fi
[ "$changed" = 1 ] && say "registered runsc ($RUNSC, --network=none) in $DAEMON_JSON"

# 3. dockerd ------------------------------------------------------------------------------
engine_up() { docker info >/dev/null 2>&1; }
dockerd_pid() { pgrep -x dockerd | head -n1 || true; }

pid=$(dockerd_pid)
if [ -z "$pid" ]; then
  if engine_up; then
    say "an engine answers on DOCKER_HOST but no local dockerd runs; leaving it alone"
  else
    say "starting dockerd (log: $DOCKERD_LOG)"
    # setsid + nohup: the daemon outlives this script and the CI step that ran it.
    setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 < /dev/null &
    disown || true
  fi
elif [ "$changed" = 1 ]; then
  say "reloading dockerd runtimes (SIGHUP to $pid)"
  kill -HUP "$pid"
fi

# 4. wait ----------------------------------------------------------------------------------
deadline=$((SECONDS + WAIT_SECONDS))
until [ -S "$SOCK" ] && engine_up; do
  if [ $SECONDS -ge $deadline ]; then
    say "engine did not answer within ${WAIT_SECONDS}s; last lines of $DOCKERD_LOG:"
    tail -n 30 "$DOCKERD_LOG" >&2 2>/dev/null || true
    exit 1
  fi
  sleep 0.5
done
# A SIGHUP reload is asynchronous: wait until runsc is listed.
# (Captured, not piped into `grep -q`: with pipefail an early grep exit can SIGPIPE docker.)
until [[ "$(docker info --format '{{json .Runtimes}}' 2>/dev/null || true)" == *'"runsc"'* ]]; do
  if [ $SECONDS -ge $deadline ]; then
    say "engine answers but runsc is not among its runtimes: $(docker info --format '{{json .Runtimes}}' 2>&1)"
    exit 1
  fi
  sleep 0.5
done
say "engine ready: $(docker version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}'), runtimes $(docker info --format '{{range $k, $v := .Runtimes}}{{$k}} {{end}}')"
