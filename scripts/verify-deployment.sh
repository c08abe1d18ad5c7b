#!/usr/bin/env bash
# Check a deployment the way the guide does: the health endpoints answer
# through the load balancer, unknown paths get the fixed 404, the API is
# routed (and refuses unauthenticated callers), HTTP answers 301 to HTTPS on
# the domain, the certificate matches the name (curl verifies it), and both ECS
# services run their desired count on a finished rollout.
#
#   ENVIRONMENT_NAME=medrobotics AWS_REGION=us-east-1 ./verify-deployment.sh
#
# Optional: VERIFY_TIMEOUT_SECONDS (default 600) bounds the wait for the
# services; VERIFY_HTTP_URL is the plain-HTTP base URL whose 301 is checked
# (default: the https:// URL with http:// and no port).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

require_env ENVIRONMENT_NAME AWS_REGION
check_environment_name
require_tool aws
require_tool curl

VERIFY_TIMEOUT_SECONDS="${VERIFY_TIMEOUT_SECONDS:-600}"
failures=0

ALB_URL="$(stack_output "${ENVIRONMENT_NAME}-alb" LoadBalancerURL)"
CLUSTER="${ENVIRONMENT_NAME}-cluster"
log "load balancer: ${ALB_URL}"
if [[ "${ALB_URL}" =~ ^https://[^/]*\.elb\.amazonaws\.com ]]; then
  die "${ALB_URL} is the load balancer's own name, which no certificate carries; deploy with DOMAIN_NAME"
fi

# Print the HTTP status of a GET, 000 when nothing answered.
http_status() {
  curl --silent --output /dev/null --max-time 10 --write-out '%{http_code}' "$@" || true
}

# Expect one of the given statuses for a URL, retrying until the deadline.
expect_status() {
  local url="$1" code deadline=$((SECONDS + VERIFY_TIMEOUT_SECONDS))
  shift
  while true; do
    code="$(http_status "${url}")"
    for ok in "$@"; do
      if [[ "${code}" == "${ok}" ]]; then
        log "ok   ${url} -> ${code}"
        return 0
      fi
    done
    if ((SECONDS >= deadline)); then
      log "FAIL ${url} -> ${code} (expected $*)"
      failures=$((failures + 1))
      return 0
    fi
    sleep "${POLL_SECONDS}"
  done
}

# ---------------------------------------------------------------- ECS
check_service() {
  local service="$1" line status desired running rollout deadline=$((SECONDS + VERIFY_TIMEOUT_SECONDS))
  while true; do
    line="$(awsr ecs describe-services --cluster "${CLUSTER}" --services "${service}" \
      --query "services[0].[status,desiredCount,runningCount,deployments[?status=='PRIMARY'].rolloutState | [0]]" \
      --output text)"
    read -r status desired running rollout <<<"${line}"
    if [[ "${status}" == ACTIVE && "${desired}" -ge 1 && "${running}" == "${desired}" \
        && "${rollout}" == COMPLETED ]]; then
      log "ok   service ${service}: ${running}/${desired} running, rollout ${rollout}"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      log "FAIL service ${service}: status ${status}, ${running}/${desired} running, rollout ${rollout}"
      failures=$((failures + 1))
      return 0
    fi
    sleep "${POLL_SECONDS}"
  done
}

for service in "${SERVICES[@]}" archiver; do
  check_service "${ENVIRONMENT_NAME}-${service}"
done

# ---------------------------------------------------------------- HTTP
expect_status "${ALB_URL}/api/health" 200
expect_status "${ALB_URL}/ingest/health" 200
# Routed to the API, which refuses callers without credentials in production.
expect_status "${ALB_URL}/api/robots" 200 401 403
expect_status "${ALB_URL}/ingest/stats" 200 401 403
# Anything outside /api/* and /ingest/* is the load balancer's fixed 404.
expect_status "${ALB_URL}/no-such-route" 404

if [[ "${ALB_URL}" == https://* ]]; then
  host="${ALB_URL#https://}"
  host="${host%%/*}"
  plain="${VERIFY_HTTP_URL:-http://${host%%:*}}/api/health"
  location="$(curl --silent --output /dev/null --max-time 10 --write-out '%{http_code} %{redirect_url}' "${plain}" || true)"
  if [[ "${location}" == "301 https://${host%%:*}"* ]]; then
    log "ok   ${plain} answers 301 to HTTPS"
  else
    log "FAIL ${plain} -> ${location} (expected a 301 to https://${host%%:*})"
    failures=$((failures + 1))
  fi
else
  log "WARNING: the load balancer serves PLAIN HTTP (no domain): a trial deployment, no real data;"
  log "WARNING: deploy with DOMAIN_NAME and HOSTED_ZONE_ID for HTTPS (see the TransportSecurity output)"
fi

if ((failures)); then
  die "${failures} check(s) failed"
fi
log "all checks passed"
