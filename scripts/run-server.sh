#!/usr/bin/env bash
# Run stalwart-mp on the embedded defaults (LMDB, filesystem, self-signed TLS), as the
# current user, on unprivileged ports. First run: creates ./.venv and ./var (config, data,
# admin account; the admin password is printed once). Later runs reuse them.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap-venv.sh >&2
VENV=.venv
DIR=${STALWART_MP_DIR:-var}
if [ ! -f "$DIR/config.toml" ]; then
  "$VENV/bin/stalwart-mp" init --dir "$DIR" --dev-ports --hostname "${STALWART_MP_HOSTNAME:-localhost}"
fi
exec "$VENV/bin/stalwart-mp" serve --config "$DIR/config.toml"
