#!/usr/bin/env bash
# Install callguard's daemon as a systemd user service for the current user (run as the agent, not root).
#
#   scripts/install_service.sh [--config FILE] [--python PYTHON] [--no-start]
#
# - writes an editable copy of the defaults to ~/.config/callguard/ (callguard config init) if there is none yet, and
#   gives it a random daemon.token if it has none (the CTI connector and the panel link need it);
# - makes private what holds the token or the incidents, when it finds it readable by others (an older
#   install, a copy pushed by IT's tools): the config with a token and the api-token file 600, the
#   store's folder 700, the database and its WAL 600;
# - writes the unit to ~/.config/systemd/user/callguard.service;
# - enables lingering (`loginctl enable-linger`), so the user's services, PulseAudio/PipeWire included,
#   run from boot: without it, capture fails silently when no session is open;
# - enables and starts the service, then prints the panel link.
# Environment overrides (packaging, tests): CALLGUARD_CONFIG_DIR, SYSTEMD_USER_DIR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
# The Python setup.sh installed callguard into: the active virtualenv, else the project's .venv/.
if [ -n "${VIRTUAL_ENV:-}" ]; then python="$VIRTUAL_ENV/bin/python"
elif [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"
else python="$(command -v python3 || true)"; fi
config=""
start=1

while [ $# -gt 0 ]; do
    case "$1" in
        --config) config="$2"; shift 2 ;;
        --python) python="$2"; shift 2 ;;
        --no-start) start=0; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "install_service.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" = 0 ] && [ -z "${CALLGUARD_ALLOW_ROOT:-}" ]; then
    echo "install_service.sh: run this as the agent's user, not root (it installs a user service)" >&2
    exit 2
fi
if ! "$python" -c "import callguard.live.daemon" 2>/dev/null; then
    echo "install_service.sh: $python cannot import callguard; install it first (pip install .) or pass --python" >&2
    exit 1
fi

python="$("$python" -c 'import sys; print(sys.executable)')"  # the real interpreter, not a shim

config_dir="${CALLGUARD_CONFIG_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/callguard}"
unit_dir="${SYSTEMD_USER_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user}"
mkdir -p "$config_dir" "$unit_dir"

if [ -z "$config" ]; then
    config="$config_dir/callguard.toml"
    if [ ! -e "$config" ]; then
        # An editable copy of the packaged defaults: config, lexicons, prompts, labelled/.
        "$python" -m callguard.cli config init "$config_dir"
        echo "installed the default configuration in $config_dir"
    fi
fi
config="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"

token="$(sed -n 's/^token *= *"\(.*\)"/\1/p' "$config" | head -1)"
if [ -z "$token" ]; then
    token="$("$python" -c 'import secrets; print(secrets.token_urlsafe(24))')"
    if grep -q '^token *=' "$config"; then
        sed -i "s|^token *=.*|token = \"$token\"|" "$config"
    elif grep -q '^\[daemon\]' "$config"; then
        sed -i "s|^\[daemon\]|[daemon]\ntoken = \"$token\"|" "$config"
    else
        printf '\n[daemon]\ntoken = "%s"\n' "$token" >>"$config"
    fi
    chmod 600 "$config"
    echo "generated daemon.token in $config"
fi
# Validates the config, and names the store it uses.
store="$("$python" -c "import sys; from callguard.core.config import load_config
c = load_config(sys.argv[1]); print(c.path(c.store.path))" "$config")"

# private MODE PATH...: tighten each existing PATH that others can read or write to MODE. A file of
# another user's (a system config under /etc) is not ours to change: said, and left.
private() {
    local mode="$1" path was
    shift
    for path in "$@"; do
        [ -e "$path" ] || continue
        was="$(stat -c %a "$path")"
        if [ $((0$was & 077)) -eq 0 ]; then continue; fi
        if [ "$(stat -c %u "$path")" != "$(id -u)" ]; then
            echo "warning: $path is open to others (mode $was) and not yours to change: ask IT" >&2
        elif chmod "$mode" "$path"; then
            echo "made $path private (mode $mode, was $was)"
        fi
    done
}
private 600 "$config"
# The store's folder only when it is the store's own (the database, its WAL, the token), not a home
# or a folder of other things that a store path happens to point into.
store_dir="$(dirname "$store")"
others=""
if [ -d "$store_dir" ]; then
    others="$(find "$store_dir" -mindepth 1 -maxdepth 1 ! -name "$(basename "$store")*" ! -name api-token | head -1)"
fi
if [ -z "$others" ]; then
    private 700 "$store_dir"
elif [ -e "$store_dir" ] && [ $((0$(stat -c %a "$store_dir") & 077)) -ne 0 ]; then
    echo "warning: $store_dir (the store's folder) is open to others and holds other files: left as is" >&2
fi
private 600 "$store_dir/api-token" "$store" "$store-wal" "$store-shm"

sed -e "s|@PYTHON@|$python|g" -e "s|@CONFIG@|$config|g" "$here/callguard.service" >"$unit_dir/callguard.service"
echo "wrote $unit_dir/callguard.service"

if [ "$start" = 1 ]; then
    if ! loginctl enable-linger "$USER" 2>/dev/null; then
        echo "warning: 'loginctl enable-linger $USER' failed; ask IT to run it as root, or the service" >&2
        echo "         (and PulseAudio/PipeWire) only runs while you are logged in" >&2
    fi
    systemctl --user daemon-reload
    systemctl --user enable --now callguard.service
    systemctl --user --no-pager status callguard.service | head -5 || true
fi

port="$(sed -n 's/^port *= *\([0-9]*\)/\1/p' "$config" | head -1)"
echo
echo "Panel (keep it open beside the softphone): http://127.0.0.1:${port:-8765}/panel/#token=$token"
echo "Logs: journalctl --user -u callguard -o cat      Reload config: systemctl --user reload callguard"
