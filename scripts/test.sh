#!/usr/bin/env bash
# One command to run every check: creates .venv, installs with test extras, installs Debian's chromium
# for the browser tests when missing, runs ruff and the whole pytest suite (SQLite and PostgreSQL;
# with CI=true a missing PostgreSQL fails instead of skipping). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]' >/dev/null
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; browser tests will skip" >&2
  else
    echo "warning: chromium not found; browser tests will skip" >&2
  fi
fi
.venv/bin/ruff check .
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
