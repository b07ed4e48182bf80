#!/usr/bin/env bash
# rollguard's one entry point for a fresh machine. Every command does its own set-up, idempotently:
# a virtualenv in .venv with rollguard installed (editable, with test tools), the `prometheus`
# binary (Debian package `prometheus`; PROMETHEUS_BIN points at another one), and for `test` the
# Prometheus-compatible backends the suite runs against (Debian packages `victoria-metrics`:
# `victoria-metrics` and its authenticating proxy `vmauth`; `nginx`, as a Mimir-style tenant gateway).
#
#   ./run.sh demo [demo flags]   set up, then run a faulty canary release in the local sandbox
#   ./run.sh test [pytest args]  set up, then lint (ruff, import contracts, mypy) and run the test suite
#   ./run.sh setup               set up only
#   ./run.sh bench               set up, then run the benchmark scripts (prints figures)
#   ./run.sh image [--keep-rootfs]  build the step image (root; no Docker): build/image/rollguard-VERSION.oci.tar
set -euo pipefail
cd "$(dirname "$0")"

VENV="${ROLLGUARD_VENV:-.venv}"

say() { printf 'run.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

ensure_python() {
  command -v python3 >/dev/null || die "python3 is not installed; install Python 3.10 or newer"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "python3 is $(python3 -V 2>&1); rollguard needs Python 3.10 or newer"
  python3 -c 'import venv, ensurepip' 2>/dev/null \
    || die "python3 has no venv/ensurepip module; on Debian/Ubuntu: apt-get install python3-venv"
}

# Install Debian packages with apt-get (through sudo when not root); on any failure, die with what to do
# instead ($1), never half-silently.
apt_install() {
  local instead="$1"; shift
  local sudo=""
  if [ "$(id -u)" != "0" ]; then
    command -v sudo >/dev/null || die "not root and no sudo to install $*: $instead"
    sudo="sudo"
  fi
  command -v apt-get >/dev/null || die "no apt-get here to install $*: $instead"
  $sudo apt-get update -qq >/dev/null || die "apt-get update failed: $instead"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed: $instead"
}

ensure_prometheus() {
  if [ -n "${PROMETHEUS_BIN:-}" ]; then
    [ -x "$PROMETHEUS_BIN" ] || die "PROMETHEUS_BIN=$PROMETHEUS_BIN is not an executable file"
    return
  fi
  command -v prometheus >/dev/null && return
  say "installing the Debian package 'prometheus' (the real Prometheus server the tests and demo run)"
  apt_install "install the Debian package 'prometheus' yourself, or set PROMETHEUS_BIN to its binary" prometheus
  command -v prometheus >/dev/null || die "prometheus is still not on PATH after installing; set PROMETHEUS_BIN"
}

# Debian packages the test suite runs for real: VictoriaMetrics (a Prometheus-compatible backend) and
# vmauth (an authenticating proxy in front of it), both from the package `victoria-metrics`; nginx as a
# gateway that demands a tenant header (X-Scope-OrgID, as Mimir's and Cortex's do).
ensure_test_backends() {
  command -v victoria-metrics >/dev/null && command -v vmauth >/dev/null \
    && { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } && return
  say "installing the Debian packages 'victoria-metrics' and 'nginx' (VictoriaMetrics, vmauth, nginx: the tests run them)"
  apt_install "install VictoriaMetrics and vmauth (1.79 or later) and nginx yourself" victoria-metrics nginx
  command -v vmauth >/dev/null || die "vmauth is still not on PATH after installing victoria-metrics"
}

ensure_venv() {
  [ -x "$VENV/bin/python" ] || { say "creating virtualenv $VENV"; python3 -m venv "$VENV"; }
  # A strict editable install (a tree of links under build/) lets static tools (mypy, import-linter)
  # follow the `rollguard` namespace; it links files, so a new or removed module needs a re-install:
  # the stamp covers the packaging files and the list of code files.
  local stamp deps_stamp
  deps_stamp="$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)"
  stamp="$deps_stamp $(find steps workflows sandbox experiment -type f -not -path '*/__pycache__/*' | sort | sha256sum | cut -d' ' -f1)"
  local installed
  installed="$(cat "$VENV/.rollguard-installed" 2>/dev/null || true)"
  [ "$installed" = "$stamp" ] && return
  local deps_flag=""
  if [ "${installed%% *}" = "$deps_stamp" ]; then
    deps_flag="--no-deps"   # only the file list changed: re-link, nothing to download
  else
    say "installing rollguard and its dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  fi
  "$VENV/bin/python" -m pip install -q $deps_flag -e '.[test]' --config-settings editable_mode=strict \
    > "$VENV/pip-install.log" 2>&1 || { cat "$VENV/pip-install.log" >&2; die "pip could not install rollguard into $VENV (its messages are above)"; }
  "$VENV/bin/python" -c 'import rollguard.steps.cli' || die "installing rollguard into $VENV failed (see $VENV/pip-install.log)"
  echo "$stamp" > "$VENV/.rollguard-installed"
}

ensure_image_tools() {
  # mmdebstrap (a Debian root filesystem from packages), umoci (an OCI image of it), skopeo (the archive)
  local missing=()
  for tool in mmdebstrap umoci skopeo; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" = "0" ] || die "the image build needs root (mmdebstrap, chroot); missing too: ${missing[*]}"
  say "installing the Debian packages ${missing[*]} (the image build)"
  apt_install "install ${missing[*]} yourself (Debian/Ubuntu packages)" "${missing[@]}"
}

setup() { ensure_python; ensure_prometheus; ensure_venv; }

command="${1:-help}"
[ $# -gt 0 ] && shift
case "$command" in
  setup) setup; say "ready: $VENV/bin/rollguard, $(command -v prometheus || echo "$PROMETHEUS_BIN")" ;;
  test)
    setup
    ensure_test_backends
    "$VENV/bin/ruff" check .
    "$VENV/bin/lint-imports" --no-cache
    "$VENV/bin/mypy" -p rollguard.steps -p rollguard.workflows -p rollguard.sandbox -p rollguard.experiment
    "$VENV/bin/mypy" tests benchmarks
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  demo)
    setup
    exec "$VENV/bin/rollguard" demo "${@:---scenario=faulty}"
    ;;
  image)
    ensure_python; ensure_venv; ensure_image_tools
    exec "$VENV/bin/python" images/build.py "$@"
    ;;
  bench)
    setup
    for script in benchmarks/*.py; do "$VENV/bin/python" "$script"; done
    ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; [ "$command" = help ] || exit 2 ;;
esac
