#!/usr/bin/env bash
# Install what the tests need: the real SIP peers and tools (Debian packages) and siproc itself
# with its dev extra. Idempotent, and quick when everything is already there.
#
# Environment:
#   SIPROC_FORCE_PIP=1   reinstall the Python package even if pyproject.toml did not change
set -euo pipefail
cd "$(dirname "$0")/.."

# libopus0: Opus in siproc (through ctypes); the Opus interop test fails without it, never skips.
# libasound2-dev + gcc: pyalsaaudio (the alsa extra: APLAY/ARECORD/ASTOP) builds from source
# against them; libasound2 runs it; alsa-utils: the tests compare with `aplay -L`, `arecord`.
# kamailio-tls-modules: Kamailio's tls.so (the TLS interop test); tshark: the TLS tests check a
# capture on lo (port-filtered) for cleartext SIP and RTP. espeak-ng: the default engine of SAY.
APT_PACKAGES=(kamailio kamailio-sqlite-modules kamailio-tls-modules tshark baresip-core sip-tester sox sqlite3 iproute2 libsndfile1 libopus0 espeak-ng
              libasound2 libasound2-dev alsa-utils gcc)

log() { printf 'install-deps: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        log "need root (or sudo) to run: $*"
        return 1
    fi
}

installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

# --- Debian packages -----------------------------------------------------------------------

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
if ! python3 -m pip --version >/dev/null 2>&1; then
    missing+=(python3-pip)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    # Packages must not start daemons (a system Kamailio on :5060 would be a stray peer):
    # invoke-rc.d and deb-systemd-invoke obey policy-rc.d, and 101 means "action forbidden".
    # Keep a policy-rc.d that is already there (container images ship one).
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
        own_policy=1
        trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    if [ "$own_policy" -eq 1 ]; then
        as_root rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    # Belt and braces: if a packaged Kamailio got started anyway, stop it through the service
    # manager (never by process name).
    if ss -Hlnup 'sport = :5060' 2>/dev/null | grep -q kamailio; then
        log "stopping the system kamailio service that the package started"
        as_root systemctl stop kamailio 2>/dev/null || as_root service kamailio stop || true
        as_root systemctl disable kamailio 2>/dev/null || true
    fi
fi

# --- Python package --------------------------------------------------------------------------

# Debian's python3 is "externally managed" (PEP 668); the CI machine is disposable, so let pip
# install into it. Other pythons ignore this variable.
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

# Reinstall only when pyproject.toml or the interpreter changed, or siproc (from this checkout),
# a dev tool, the alsa extra (pyalsaaudio) or the fast extra (uvloop: cli.py runs the event loop
# on it when it is importable; DESIGN.md section 2) is not importable: an editable install takes
# seconds even when nothing changed.
stamp_dir=build
stamp="$stamp_dir/.install-deps-stamp"
want="$(python3 -c 'import sys; print(sys.executable)') $(sha256sum pyproject.toml | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
where="$(cd / && python3 -c 'import os, siproc, pylibsrtp, pytest, pytest_timeout, hypothesis, mypy, ruff, alsaaudio, uvloop
print(os.path.realpath(siproc.__file__))' 2>/dev/null || true)"
if [ "${SIPROC_FORCE_PIP:-0}" = 1 ] || [ "$want" != "$have" ] || [[ "$where" != "$PWD/src/siproc/"* ]]; then
    log "pip install -e .[dev,alsa,fast]"
    python3 -m pip install -q -e '.[dev,alsa,fast]'
    mkdir -p "$stamp_dir"
    printf '%s\n' "$want" > "$stamp"
fi
