#!/usr/bin/env bash
# Fuzzes both services against their own OpenAPI documents with Schemathesis, on the embedded
# SQLite database and on PostgreSQL: every answer must be documented (status, content type,
# schema) and none may be a 5xx. Zero failures expected.
#
#   bash .ci/fuzz.sh                  # both databases
#   bash .ci/fuzz.sh sqlite           # one (sqlite or postgresql)
#
# Each database gets a fresh store (a new data folder; a new PostgreSQL database on
# 127.0.0.1:5432, trust auth, dropped afterwards), migrated and seeded with a small fleet so that
# reads find data. The services run as their containers do (`medrobotics serve`), on loopback,
# where authentication is open. FUZZ_SEED, FUZZ_EXAMPLES and FUZZ_PG_URL override the defaults;
# the reports and server logs stay in .work/fuzz/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN="${PWD}/.venv/bin"
SEED="${FUZZ_SEED:-20261129}"
EXAMPLES="${FUZZ_EXAMPLES:-60}"
PG_URL="${FUZZ_PG_URL:-postgresql+psycopg://postgres@127.0.0.1:5432}"
OUT="${PWD}/.work/fuzz"
CHECKS="not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"

[[ -x "${BIN}/schemathesis" ]] || { echo "missing ${BIN}/schemathesis: run make venv" >&2; exit 1; }

backends=("$@")
((${#backends[@]})) || backends=(sqlite postgresql)

rm -rf "${OUT}"
mkdir -p "${OUT}"
pids=()
databases=()

cleanup() {
  local pid db
  for pid in "${pids[@]}"; do
    kill "${pid}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    # A graceful stop takes a moment; one that hangs is not waited for past 30 s.
    for _ in $(seq 1 60); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.5
    done
    kill -9 "${pid}" 2>/dev/null || true
    wait "${pid}" 2>/dev/null || true
  done
  pids=()
  for db in "${databases[@]}"; do
    dropdb --if-exists -h 127.0.0.1 -U postgres "${db}" || true
  done
  databases=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "${BIN}/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# serve SERVICE PORT LOG: start one service in the background and wait for its /health.
serve() {
  local service="$1" port="$2" log="$3"
  PORT="${port}" HOST=127.0.0.1 "${BIN}/medrobotics" serve "${service}" >"${log}" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 60); do
    if curl -fs -o /dev/null "http://127.0.0.1:${port}/health"; then
      return 0
    fi
    sleep 0.5
  done
  echo "${service} did not answer /health on port ${port}; its log:" >&2
  tail -n 50 "${log}" >&2
  return 1
}

# crashes LOG...: name the exception behind each 500 the services logged (CI keeps no files).
crashes() {
  "${BIN}/python" - "$@" <<'PY'
import collections, json, re, sys

raised = re.compile(r"^([a-z_]+\.)*[A-Z]\w*[a-z]\w*: ")  # the "module.Class: message" line of a trace
seen = collections.Counter()
for path in sys.argv[1:]:
    for line in open(path, encoding="utf-8", errors="replace"):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "unhandled_error":
            lines = (entry.get("exception") or "").splitlines()
            said = [ln for ln in lines if raised.match(ln)] or ["?"]
            seen[(entry.get("route"), said[-1][:200])] += 1
for (route, last), count in sorted(seen.items(), key=str):
    print(f"  {count} x {route}: {last}")
PY
}

# fuzz NAME URL: run Schemathesis against one OpenAPI document.
fuzz() {
  local name="$1" url="$2"
  echo "--- ${name}: ${url} (at ${SECONDS} s)"
  SCHEMATHESIS_HOOKS=.ci/fuzz_hooks.py "${BIN}/schemathesis" --config-file .ci/schemathesis.toml run "${url}" \
    --checks "${CHECKS}" \
    --seed "${SEED}" \
    --max-examples "${EXAMPLES}" \
    --generation-database none \
    --workers 1 \
    --no-color \
    --report junit \
    --report-junit-path "${OUT}/${name}.xml"
}

status=0
for backend in "${backends[@]}"; do
  echo "=== fuzzing on ${backend} (at ${SECONDS} s)"
  dir="${OUT}/${backend}"
  mkdir -p "${dir}/data"
  export MEDROBOTICS_DATA_DIR="${dir}/data" MEDROBOTICS_LOG_LEVEL=WARNING MEDROBOTICS_LOG_FORMAT=json
  case "${backend}" in
    sqlite) unset DATABASE_URL ;;
    postgresql)
      db="fuzz_$$_${RANDOM}"
      createdb -h 127.0.0.1 -U postgres "${db}"
      databases+=("${db}")
      export DATABASE_URL="${PG_URL}/${db}"
      ;;
    *)
      echo "unknown database ${backend}: sqlite or postgresql" >&2
      exit 2
      ;;
  esac
  "${BIN}/medrobotics" db upgrade
  ingest_port="$(free_port)"
  serve ingestion "${ingest_port}" "${dir}/ingestion.log"
  api_port="$(free_port)"
  serve api "${api_port}" "${dir}/api.log"
  "${BIN}/medrobotics" seed --url "http://127.0.0.1:${ingest_port}" --robots 6 --facilities 2 \
    --procedures 60 --telemetry-per-procedure 5 --random-seed 7 --end 2026-01-01 >/dev/null

  failed=0
  fuzz "ingestion-${backend}" "http://127.0.0.1:${ingest_port}/ingest/openapi.json" || failed=1
  fuzz "api-${backend}" "http://127.0.0.1:${api_port}/api/openapi.json" || failed=1
  cleanup
  echo "--- ${backend} done (at ${SECONDS} s)"
  if ((failed)); then
    status=1
    echo "--- unhandled errors logged by the services on ${backend}:"
    crashes "${dir}/ingestion.log" "${dir}/api.log"
  fi
done

if ((status)); then
  echo "fuzzing FAILED in ${SECONDS} s (reports and server logs in ${OUT})" >&2
  exit 1
fi
echo "fuzzing passed in ${SECONDS} s"
