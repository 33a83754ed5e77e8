#!/usr/bin/env bash
# Prepares this machine for edgefed: system packages (Mosquitto, static
# busybox for the tiny test image, a Docker engine when none answers),
# a virtualenv in .venv with edgefed and its dev tools, and the tiny image.
# Safe to run again; quick when everything is already there.
#
#   bash deploy/setup.sh            everything
#   EDGEFED_NO_DOCKER=1 bash ...    never install or start a Docker engine
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
warn() { printf '\033[33mwarning:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}

apt_install() {
  # $@: packages that are missing
  [ "$#" -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing $*; install them with your package manager"
  say "installing $* (apt)"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; then
    as_root apt-get update -qq >/dev/null 2>&1 || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
      || die "could not install $* — run: sudo apt-get install -y $*"
  fi
}

# -- python ---------------------------------------------------------------
PY=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 \
     && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY=$(command -v "$candidate"); break
  fi
done
[ -n "$PY" ] || die "edgefed needs Python 3.11 or newer (found: $(python3 --version 2>&1 || echo none))"

# -- system packages ------------------------------------------------------
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
# The tiny image is FROM scratch: its busybox must be the static build.
[[ -x /usr/bin/busybox && "$(ldd /usr/bin/busybox 2>&1 || true)" == *"not a dynamic"* ]] \
  || missing+=(busybox-static)
"$PY" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  if as_root true 2>/dev/null; then apt_install "${missing[@]}"
  else die "missing ${missing[*]}: run  sudo apt-get install -y ${missing[*]}"
  fi
fi
# The Debian package enables a system-wide broker; edgefed starts its own on a
# free port and never uses that one.

# -- docker engine ----------------------------------------------------------
docker_up() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }
if [ "${EDGEFED_NO_DOCKER:-0}" != "1" ] && ! docker_up; then
  if as_root true 2>/dev/null; then
    command -v dockerd >/dev/null 2>&1 || apt_install docker.io
    if ! docker_up; then
      say "starting dockerd in the background (log: /tmp/edgefed-dockerd.log)"
      as_root sh -c 'nohup dockerd >/tmp/edgefed-dockerd.log 2>&1 &'
      for _ in $(seq 1 60); do docker_up && break; sleep 1; done
    fi
    docker_up || warn "the Docker engine did not come up (see /tmp/edgefed-dockerd.log)"
  else
    warn "no Docker engine answers; to get one: sudo apt-get install -y docker.io && sudo systemctl start docker"
  fi
fi

# -- virtualenv -------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.edgefed-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing edgefed and its dev tools into .venv (pip)"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev,drill]'
  touch "$stamp"
fi

# -- tiny image --------------------------------------------------------------
if docker_up; then
  bash deploy/build-test-image.sh >/dev/null
  say "Docker engine ready; image edgefed/tiny:latest (also myapp:latest) built"
fi
