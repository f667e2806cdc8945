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
)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
python3 -m pip install -q --upgrade pip
python3 -m pip install -q -e ".[test]"
# pyenv only sees a new console script once its shims are rebuilt.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
