#!/usr/bin/env bash
# Run the Berth compatibility suite.
#   BERTH_BIN=/path/to/berth tests/compat/run.sh [pytest args...]
# Creates/updates the venv at ${BERTH_VENV:-/root/.cache/berth/venv} from requirements.txt.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${BERTH_VENV:-/root/.cache/berth/venv}"
: "${BERTH_BIN:?set BERTH_BIN to the berth server binary}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.berth-compat-requirements"
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
  "$venv/bin/pip" install -q -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi
export BERTH_BIN
exec "$venv/bin/python" -m pytest "$here" "$@"
