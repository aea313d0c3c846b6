#!/usr/bin/env bash
# Builds the docs site (docs/ → site/) with mkdocs --strict, in its own virtual environment:
# mkdocs and its plugins (docs/requirements.txt) and layerfit installed as a wheel would be
# (not editable: the API page is read statically from the installed package, whose sources
# live in solver/ and runtime/ under other names).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv-docs"
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/docs/requirements.txt"
# --no-deps: the docs import only the capability table, which needs nothing beyond Python.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$root"
cd "$root"
NO_MKDOCS_2_WARNING=1 "$venv/bin/mkdocs" build --strict "$@"
