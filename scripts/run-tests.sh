#!/usr/bin/env bash
# Run the whole test suite (both cores). Services (PostgreSQL, MariaDB, Redis...) that are
# not reachable make their tests skip with the reason; REQUIRE_SERVICES=1 makes that a
# failure (CI). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap-venv.sh >&2
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" -q "$@"
