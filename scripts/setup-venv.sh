#!/usr/bin/env bash
# Creates .venv (once) and installs the pinned requirements and layerfit itself into it.
# Sourced by the two quick-start scripts; re-runs are cheap (skipped when nothing changed).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.layerfit-installed"
want=$(cat "$root/requirements.txt" "$root/pyproject.toml" | cksum)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/requirements.txt"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$root"
    echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
