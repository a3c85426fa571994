#!/usr/bin/env bash
# Create (or refresh) ./.venv with the pinned dev requirements and the package, editable.
# Re-installs only when requirements/, setup.py or proto/ changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "stalwart-mp needs Python 3.11 or newer (found: $("$PY" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv || { echo "python3 -m venv failed: on Debian, apt install python3-venv" >&2; exit 1; }
fi
stamp=.venv/.stalwart-mp-installed
sum=$(cat requirements/*.txt setup.py pyproject.toml stalwart_mp_build.py $(find proto -name '*.proto' | sort) | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ] || [ ! -d stalwart_mp/control/gen ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -r requirements/dev.txt
  .venv/bin/python -m pip install -q --no-build-isolation -e .
  if [ ! -f stalwart_mp/control/gen/stalwart_mp/v1/server_pb2.py ]; then
    echo "the gRPC stubs were not generated from proto/ (see the pip output above)" >&2
    exit 1
  fi
  echo "$sum" > "$stamp"
fi
