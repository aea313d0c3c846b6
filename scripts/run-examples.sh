#!/usr/bin/env bash
# Quick start, command 1: solve the seed methodology's worked example (on HBM, and against the L2 it
# does not fit), then compare greedy with the exact methods over every bundled instance.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/scripts/setup-venv.sh"
cd "$root"
layerfit solve instances/seed-30b-h100-hbm.json
echo
layerfit solve instances/seed-30b-h100-l2.json || true   # infeasible by design: exit code 1
echo
layerfit compare instances/ "$@"
