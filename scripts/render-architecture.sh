#!/usr/bin/env bash
# Renders the picture of docs/architecture.md from its source (Graphviz, installed by
# scripts/install-deps.sh --test). Commit docs/architecture.dot and docs/architecture.svg together.
set -euo pipefail
cd "$(dirname "$0")/.."
dot -Tsvg docs/architecture.dot -o docs/architecture.svg
echo "rendered docs/architecture.svg"
