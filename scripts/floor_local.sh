#!/usr/bin/env bash
# The supervisors' floor on this machine's own PostgreSQL (Debian's cluster), over HTTPS with a
# self-signed certificate: one command for a pilot or a trial. What it makes, once, under
# $CALLGUARD_FLOOR_HOME (default ~/.local/share/callguard/floor): floor.toml, floor.crt, floor.key.
# A site's own PostgreSQL and certificate: edit floor.toml, or
#   scripts/callguard floor serve --config floor.toml --dsn "host=db.example dbname=callguard_floor"
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR="${CALLGUARD_FLOOR_HOME:-$HOME/.local/share/callguard/floor}"
PORT="${CALLGUARD_FLOOR_PORT:-8443}"
if [ "$(id -u)" -eq 0 ]; then AS_PG=(runuser -u postgres --); SUDO=(); else AS_PG=(sudo -u postgres); SUDO=(sudo); fi
command -v pg_lsclusters >/dev/null || { echo "PostgreSQL is not installed: run scripts/setup.sh" >&2; exit 1; }

# 1. Debian's cluster, running
read -r version cluster _ < <(pg_lsclusters -h | head -n 1) || true
if [ -z "${version:-}" ]; then
  version="$(ls /usr/lib/postgresql | sort -n | tail -n 1)"; cluster=main
  "${SUDO[@]}" pg_createcluster "$version" "$cluster"
fi
"${SUDO[@]}" pg_ctlcluster "$version" "$cluster" start 2>/dev/null || true
socket_dir=/var/run/postgresql

# 2. a role for this user, owning the floor's database
user="$(id -un)"
psql_as_pg() { "${AS_PG[@]}" psql -h "$socket_dir" -p "$(pg_conftool -s "$version" "$cluster" show port)" -tAc "$1"; }
[ "$(psql_as_pg "SELECT 1 FROM pg_roles WHERE rolname = '$user'")" = 1 ] || psql_as_pg "CREATE ROLE \"$user\" LOGIN"
[ "$(psql_as_pg "SELECT 1 FROM pg_database WHERE datname = 'callguard_floor'")" = 1 ] ||
  psql_as_pg "CREATE DATABASE callguard_floor OWNER \"$user\""

# 3. a certificate and a config, once
mkdir -p "$HOME_DIR" && chmod 700 "$HOME_DIR"
if [ ! -f "$HOME_DIR/floor.crt" ]; then
  host="$(hostname)"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 -subj "/CN=$host" \
    -addext "subjectAltName=DNS:$host,DNS:localhost,IP:127.0.0.1" \
    -keyout "$HOME_DIR/floor.key" -out "$HOME_DIR/floor.crt" 2>/dev/null
  chmod 600 "$HOME_DIR/floor.key"
fi
if [ ! -f "$HOME_DIR/floor.toml" ]; then
  port="$(pg_conftool -s "$version" "$cluster" show port)"
  cat > "$HOME_DIR/floor.toml" <<EOF
# callguard floor: see README, "The supervisors' floor". 127.0.0.1 until the site opens it on purpose.
listen = "127.0.0.1"
port = $PORT
dsn = "host=$socket_dir port=$port dbname=callguard_floor"
cert_file = "$HOME_DIR/floor.crt"
key_file = "$HOME_DIR/floor.key"
timezone = "$(cat /etc/timezone 2>/dev/null || echo UTC)"
EOF
fi

config="$HOME_DIR/floor.toml"
scripts/callguard floor init-db --config "$config"
cat <<EOF
The wallboard: https://127.0.0.1:$PORT/wallboard/  (certificate: $HOME_DIR/floor.crt)
  a supervisor:   scripts/callguard floor user add LOGIN --role supervisor --team TEAM --config $config
  a workstation:  scripts/callguard floor enrol NAME --team TEAM --config $config > floor-credential
EOF
exec scripts/callguard floor serve --config "$config"
