#!/usr/bin/env bash
# Static checks of the AWS deployment, from the repository root; any finding fails.
#   cfn-lint (errors and warnings), yamllint (strict), shellcheck, actionlint
#   (the GitHub workflows, with shellcheck on their run: steps), checkov.
# Needs the project venv (.venv, with the dev lock installed). checkov gets a
# virtual environment of its own (.work/checkov-venv) from requirements/checkov.lock,
# because it pins a boto3 of its own.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV_BIN=".venv/bin"
for tool in cfn-lint yamllint shellcheck actionlint; do
  [[ -x "${VENV_BIN}/${tool}" ]] || { echo "missing ${VENV_BIN}/${tool}: install requirements/dev.lock into .venv" >&2; exit 1; }
done

status=0
step() {
  echo "== $*"
  if ! "$@"; then
    echo "!! failed: $*" >&2
    status=1
  fi
}

step "${VENV_BIN}/cfn-lint" cloudformation/*.yaml
step "${VENV_BIN}/yamllint" --strict cloudformation .github/workflows .yamllint .checkov.yaml checkov-skips.yaml
step "${VENV_BIN}/shellcheck" -x scripts/*.sh .ci/*.sh .ci/run tests/infra/bin/*
step "${VENV_BIN}/actionlint" -shellcheck "${VENV_BIN}/shellcheck" .github/workflows/*.yml

CHECKOV_VENV=".work/checkov-venv"
STAMP="${CHECKOV_VENV}/.lock.sha256"
lock_sum="$(sha256sum requirements/checkov.lock | cut -d' ' -f1)"
if [[ ! -x "${CHECKOV_VENV}/bin/checkov" || "$(cat "${STAMP}" 2>/dev/null)" != "${lock_sum}" ]]; then
  echo "== creating ${CHECKOV_VENV} from requirements/checkov.lock"
  rm -rf "${CHECKOV_VENV}"
  mkdir -p .work
  "${VENV_BIN}/python" -m venv "${CHECKOV_VENV}"
  # The lock names every package, so nothing unpinned comes in.
  "${CHECKOV_VENV}/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    -r requirements/checkov.lock
  printf '%s\n' "${lock_sum}" >"${STAMP}"
fi
step "${CHECKOV_VENV}/bin/checkov" --config-file .checkov.yaml

if ((status)); then
  echo "infrastructure checks FAILED" >&2
  exit 1
fi
echo "infrastructure checks passed"
