#!/usr/bin/env bash
# One-step set-up: STARec with its LLM, RL-library (SB3, SuperSuit) and test extras, plus the real
# MovieLens-100K copy that ships inside the recbole wheel.
# recbole is installed without its dependencies on purpose: we only read its
# data files, and its pinned dependencies would pull a second torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -m pip install --quiet --disable-pip-version-check torch==2.13.0
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[llm,test,rl]"
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps recbole==1.2.1
# The extras must leave the pinned CPU torch in place (SB3 only needs torch>=2.3).
"$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" \
    || { echo "setup.sh: torch 2.13.0 was replaced by an extra's dependency" >&2; exit 1; }
