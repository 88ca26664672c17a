#!/usr/bin/env bash
# One command to try vetbot locally: creates .venv, installs, migrates var/vetbot.db (SQLite) and runs
# the bot with the bundled fake WeChat API (config.example.yaml). Then, in another terminal:
#   .venv/bin/vetbot chat -c config.example.yaml --url http://127.0.0.1:8080/wechat
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-config.example.yaml}
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e . >/dev/null
.venv/bin/vetbot db upgrade -c "$CONFIG"
exec .venv/bin/vetbot serve -c "$CONFIG" --with-fake-wechat
