#!/usr/bin/env bash
# Headless PulseAudio with a virtual "call" sink, for the daemon's end-to-end test (and for trying the
# daemon on a machine without a sound card).
#
#   scripts/ci_pulse.sh install          apt-get the packages (pulseaudio, pulseaudio-utils), if missing
#   scripts/ci_pulse.sh start DIR        start a server whose XDG_RUNTIME_DIR is DIR; prints the exports
#   scripts/ci_pulse.sh stop DIR         stop it
#
# With the server up: play a call with `PULSE_SINK=callsink paplay FILE.wav`; PortAudio records it through
# the ALSA device "pulse" when the recorder runs with PULSE_SOURCE=callsink.monitor.
set -euo pipefail

SINK="${CALLGUARD_PULSE_SINK:-callsink}"

install() {
    if command -v pulseaudio >/dev/null && command -v paplay >/dev/null && command -v pactl >/dev/null; then
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends pulseaudio pulseaudio-utils libasound2-plugins
}

start() {
    local dir="$1"
    mkdir -p "$dir"
    chmod 700 "$dir"
    export XDG_RUNTIME_DIR="$dir"
    # -n: no default.pa (no hardware probing); a null sink per call; never exit when idle.
    # Root is warned against but works for a private per-test server.
    pulseaudio -D --exit-idle-time=-1 -n --log-target=file:"$dir/pulse.log" \
        --load=module-native-protocol-unix \
        --load="module-null-sink sink_name=$SINK rate=16000 channels=2" 2>>"$dir/pulse.err" || true
    for _ in $(seq 1 50); do
        if pactl info >/dev/null 2>&1; then
            echo "export XDG_RUNTIME_DIR=$dir"
            echo "export PULSE_SOURCE=$SINK.monitor"
            return 0
        fi
        sleep 0.1
    done
    echo "ci_pulse.sh: PulseAudio did not start (see $dir/pulse.log, $dir/pulse.err)" >&2
    return 1
}

stop() {
    local dir="$1"
    XDG_RUNTIME_DIR="$dir" pulseaudio --kill 2>/dev/null || true
}

case "${1:-}" in
    install) install ;;
    start) start "${2:?usage: ci_pulse.sh start DIR}" ;;
    stop) stop "${2:?usage: ci_pulse.sh stop DIR}" ;;
    *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
