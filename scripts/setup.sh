#!/usr/bin/env bash
# Set-up on a fresh Debian machine: system packages, then callguard with its test extra.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
APT_PACKAGES=(
  espeak-ng sox libsox-fmt-all libportaudio2 libsndfile1            # fixtures and audio I/O
  asterisk-core-sounds-en-wav asterisk-core-sounds-fr-wav asterisk-moh-opsound-wav  # real voices, hold music
  asterisk-core-sounds-en asterisk-core-sounds-fr                   # their sounds/en and sounds/fr links
  pulseaudio pulseaudio-utils alsa-utils libasound2-plugins          # virtual devices for the daemon e2e test
  chromium                                                           # the panel's browser test
  libnotify-bin dbus-daemon                                          # notify-send over a test session bus
  python3-venv                                                       # the project's .venv on Debian's Python
  postgresql rsyslog prometheus-alertmanager                         # the floor's store and alert peers
  sip-tester                                                         # SIPp: the SIPREC recording client of the serve tests
)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Python: the active virtualenv, else the project's own .venv/ (stock Debian's python3 is externally
# managed and refuses pip). scripts/callguard and scripts/test.sh find the same one.
if [ -n "${VIRTUAL_ENV:-}" ]; then
  PYTHON="$VIRTUAL_ENV/bin/python"
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PYTHON=.venv/bin/python
fi
"$PYTHON" -m pip install -q --upgrade pip
# The versions the suite last passed with (update: see README, "Development").
"$PYTHON" -m pip install -q -c constraints.txt -e ".[test,floor,serve,cluster]"
