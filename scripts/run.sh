#!/usr/bin/env bash
# One command to try vetbot locally: creates .venv, installs, migrates var/vetbot.db (SQLite) and runs
# the bot with the bundled fake WeChat API (config.example.yaml). Then, in another terminal:
#   .venv/bin/vetbot chat -c config.example.yaml --url http://127.0.0.1:8080/wechat
# The links the bot sends (answer, tribute, job pages) are signed with server.secret_key: a random key is
# generated on the first run and kept in var/secret_key (readable by you only), so that links keep
# working across restarts. VETBOT_SERVER__SECRET_KEY, when set, wins.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-config.example.yaml}
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e . >/dev/null
mkdir -p var
if [ ! -s var/secret_key ]; then
  (umask 077 && .venv/bin/python -c 'import secrets; print(secrets.token_hex(32))' > var/secret_key.tmp)
  mv var/secret_key.tmp var/secret_key
fi
chmod 600 var/secret_key
export VETBOT_SERVER__SECRET_KEY="${VETBOT_SERVER__SECRET_KEY:-$(cat var/secret_key)}"
.venv/bin/vetbot db upgrade -c "$CONFIG"
exec .venv/bin/vetbot serve -c "$CONFIG" --with-fake-wechat
