#!/usr/bin/env bash
# Quick start, command 2: the test suite, in its own virtual environment.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/scripts/setup-venv.sh"
cd "$root"
python -m pytest "$@"
