#!/usr/bin/env bash
# What `make demo` needs from the system: Python >= 3.11 with venv and Mosquitto (broker +
# clients); with `--tests`, what `make test` needs too: PostgreSQL's server, Prometheus
# (promtool and the server), Chromium with its driver and a CJK font, and Node with npm.
# Installed with apt-get when missing and we are root; otherwise one line says what to install.
set -euo pipefail

PY=${PY:-python3}
need=()

if ! command -v "$PY" >/dev/null 2>&1; then
    need+=(python3 python3-venv)
elif ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: $PY is $("$PY" -V 2>&1); facilities needs Python >= 3.11 (set PY=python3.11)" >&2
    exit 1
elif ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need+=(python3-venv)
fi
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
if [ "${1:-}" = "--tests" ]; then
# The tests make a PostgreSQL cluster of their own and run its server on a free port
# (tests/support/postgres.py): they need the server's binaries, never a running server.
pg_server=no
for bin in /usr/lib/postgresql/*/bin; do
    [ -x "$bin/initdb" ] && [ -x "$bin/postgres" ] && [ -x "$bin/pg_ctl" ] && pg_server=yes
done
[ "$pg_server" = yes ] || need+=(postgresql)
# Prometheus's own tools check the shipped rules, config and /metrics in the tests, and a
# Prometheus server scrapes a running service there (Debian's package brings both).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# amtool checks the shipped Alertmanager config (deploy/alertmanager); nginx -t and a running
# nginx check the shipped reverse proxy (deploy/nginx); openssl makes the throwaway CA and
# certificates of the TLS tests.
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# Node and npm run the OpenAPI linters of the tests (scripts/setup-npm.sh installs them) and
# the AsyncAPI CLI that validates docs/schemas/asyncapi.json; the quick starts of
# docs/protocol.md and docs/api.md run as written (curl).
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
# The browser tests drive Debian's Chromium (no browser download); a CJK font so that their
# screenshots of the Chinese pages are readable (phones bring their own fonts).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
fi

[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${need[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian starts a system broker on 1883 (PostgreSQL on 5432, Prometheus on 9090,
    # Alertmanager on 9093, nginx on 80) after installing; ours use free ports anyway.
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
    echo "setup: missing ${need[*]}: run 'sudo apt-get install ${need[*]}' and retry" >&2
    exit 1
fi
