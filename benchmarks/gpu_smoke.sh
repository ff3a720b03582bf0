#!/usr/bin/env bash
# The GPU paths on first contact, in one run (under 8 minutes on one GPU): prints a table of each part, or
# why it was skipped. Runs to the end on a CPU-only machine too. Usage: bash benchmarks/gpu_smoke.sh
# (in the environment where georag is installed; build it with nvcc on PATH for the CUDA variant).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-}${PYTHONPATH:+:}$PWD/python"
exec timeout 900 "${PYTHON:-python}" benchmarks/gpu_smoke.py
