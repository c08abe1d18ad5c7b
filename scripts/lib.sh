#!/usr/bin/env bash
# Shared helpers of the deployment scripts. Sourced, never run.
# Every wait here is bounded; every failed stack prints its events.

if [[ -n "${MEDROBOTICS_LIB_LOADED:-}" ]]; then
  return 0
fi
MEDROBOTICS_LIB_LOADED=1

LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${LIB_DIR}/.." && pwd)"
# shellcheck disable=SC2034  # read by the scripts that source this file
CFN_DIR="${REPO_ROOT}/cloudformation"
# shellcheck disable=SC2034
SERVICES=(data-ingestion api-service)
# Scratch files (parameter files, the secret payload) live here and go on exit.
WORK_TMP="$(mktemp -d)"
trap 'rm -rf "${WORK_TMP}"' EXIT

# Seconds between two polls, and the longest any one wait may take.
POLL_SECONDS="${POLL_SECONDS:-15}"
STACK_TIMEOUT_SECONDS="${STACK_TIMEOUT_SECONDS:-2700}"
TASK_TIMEOUT_SECONDS="${TASK_TIMEOUT_SECONDS:-900}"

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

require_env() {
  local name
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || die "${name} must be set (see docs/deployment.md)"
  done
}

require_tool() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not on PATH"
}

check_environment_name() {
  [[ "${ENVIRONMENT_NAME}" =~ ^[a-z][a-z0-9-]{1,19}$ ]] \
    || die "ENVIRONMENT_NAME must be 2-20 lower-case letters, digits or hyphens, starting with a letter"
}

# The AWS CLI, always in the deployment's region. AWS_ENDPOINT_URL, when set,
# is honoured by the CLI itself.
awsr() { aws --region "${AWS_REGION}" "$@"; }

# Tag of the images built from the current commit: the git commit, with
# -dirty-<hash of the uncommitted changes> when the work tree has any (ECR tags
# are immutable, so different contents never share a tag). IMAGE_TAG overrides.
image_tag() {
  if [[ -n "${IMAGE_TAG:-}" ]]; then
    printf '%s\n' "${IMAGE_TAG}"
    return 0
  fi
  local sha
  sha="$(git -C "${REPO_ROOT}" rev-parse --short=12 HEAD 2>/dev/null)" \
    || die "not a git checkout: set IMAGE_TAG to the tag to build or deploy"
  if [[ -n "$(git -C "${REPO_ROOT}" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    sha="${sha}-dirty-$(git -C "${REPO_ROOT}" diff HEAD | sha256sum | cut -c1-8)"
  fi
  printf '%s\n' "${sha}"
}

# Escape a string for a JSON string literal; control characters are refused.
json_escape() {
  local s="$1"
  if [[ "$s" =~ [[:cntrl:]] ]]; then
    die "value contains a control character and cannot be stored"
  fi
  s="${s//\\/\\\\}"
  s="${s//\"/\\\"}"
  printf '%s' "$s"
}

# ---------------------------------------------------------------- stacks

# Print the stack's status, or DOES_NOT_EXIST.
stack_status() {
  local out
  if out="$(awsr cloudformation describe-stacks --stack-name "$1" \
      --query 'Stacks[0].StackStatus' --output text 2>&1)"; then
    if [[ "${out}" == DELETE_COMPLETE ]]; then
      out=DOES_NOT_EXIST
    fi
    printf '%s\n' "${out}"
  elif [[ "${out}" == *"does not exist"* ]]; then
    printf 'DOES_NOT_EXIST\n'
  else
    die "cannot describe stack $1: ${out}"
  fi
}

stack_output() {
  local value
  value="$(awsr cloudformation describe-stacks --stack-name "$1" \
    --query "Stacks[0].Outputs[?OutputKey=='$2'].OutputValue" --output text)"
  [[ -n "${value}" && "${value}" != "None" ]] || die "stack $1 has no output $2"
  printf '%s\n' "${value}"
}

# Print the value of a CloudFormation export, or nothing when it is absent.
# All exports are read in one call and kept until a stack changes.
EXPORTS_CACHE="${WORK_TMP}/exports.tsv"
export_value() {
  if [[ ! -f "${EXPORTS_CACHE}" ]]; then
    awsr cloudformation list-exports --query 'Exports[].[Name,Value]' --output text \
      >"${EXPORTS_CACHE}.new"
    mv "${EXPORTS_CACHE}.new" "${EXPORTS_CACHE}"
  fi
  local name value
  while IFS=$'\t' read -r name value; do
    if [[ "${name}" == "$1" ]]; then
      if [[ "${value}" == None ]]; then
        value=""
      fi
      printf '%s\n' "${value}"
      return 0
    fi
  done <"${EXPORTS_CACHE}"
  printf '\n'
}

print_stack_events() {
  log "Most recent events of stack $1:"
  awsr cloudformation describe-stack-events --stack-name "$1" --max-items 30 \
    --query 'StackEvents[].[Timestamp,LogicalResourceId,ResourceType,ResourceStatus,ResourceStatusReason]' \
    --output table >&2 || log "(could not read the events of $1)"
}

# Wait until the stack leaves every *_IN_PROGRESS state, within
# STACK_TIMEOUT_SECONDS. Succeeds on the states given as arguments after the
# name; any other settled state is a failure and prints the events.
wait_stack() {
  local name="$1"
  shift
  local deadline=$((SECONDS + STACK_TIMEOUT_SECONDS)) status ok
  while true; do
    status="$(stack_status "${name}")"
    case "${status}" in
      *_IN_PROGRESS) ;;
      *)
        for ok in "$@"; do
          if [[ "${status}" == "${ok}" ]]; then
            log "stack ${name}: ${status}"
            return 0
          fi
        done
        log "stack ${name} ended in ${status}"
        if [[ "${status}" != DOES_NOT_EXIST ]]; then
          print_stack_events "${name}"
        fi
        return 1
        ;;
    esac
    if ((SECONDS >= deadline)); then
      log "stack ${name} still ${status} after ${STACK_TIMEOUT_SECONDS}s"
      print_stack_events "${name}"
      return 1
    fi
    sleep "${POLL_SECONDS}"
  done
}

# Write a CloudFormation parameters file from KEY=VALUE arguments.
write_parameters() {
  local file="$1" first=1 pair key value
  shift
  {
    printf '['
    for pair in "$@"; do
      key="${pair%%=*}"
      value="${pair#*=}"
      if ((first)); then first=0; else printf ','; fi
      printf '{"ParameterKey":"%s","ParameterValue":"%s"}' \
        "$(json_escape "${key}")" "$(json_escape "${value}")"
    done
    printf ']\n'
  } >"${file}"
}

# --role-arn for CloudFormation when CLOUDFORMATION_ROLE_ARN names the role the
# stacks are deployed with (the pipeline's deploy role may only pass that role).
cfn_role_args() {
  if [[ -n "${CLOUDFORMATION_ROLE_ARN:-}" ]]; then
    printf '%s\n' --role-arn "${CLOUDFORMATION_ROLE_ARN}"
  fi
}

# Create or update a stack from a template and KEY=VALUE parameters, then wait
# for it. "No updates are to be performed" is success. A stack left in
# ROLLBACK_COMPLETE by a failed first create holds nothing and cannot be
# updated: it is deleted and created again.
deploy_stack() {
  local name="$1" template="$2"
  shift 2
  local status params out role_args
  mapfile -t role_args < <(cfn_role_args)
  status="$(stack_status "${name}")"
  case "${status}" in
    *_IN_PROGRESS)
      log "stack ${name} is ${status}; waiting for it to settle first"
      wait_stack "${name}" CREATE_COMPLETE UPDATE_COMPLETE UPDATE_ROLLBACK_COMPLETE ROLLBACK_COMPLETE \
        || die "stack ${name} did not settle"
      status="$(stack_status "${name}")"
      ;;
  esac
  if [[ "${status}" == ROLLBACK_COMPLETE ]]; then
    log "stack ${name} is ROLLBACK_COMPLETE from an earlier failed create:"
    print_stack_events "${name}"
    log "deleting it before creating it again"
    awsr cloudformation delete-stack --stack-name "${name}" "${role_args[@]}"
    wait_stack "${name}" DOES_NOT_EXIST || die "could not delete ${name}"
    status=DOES_NOT_EXIST
  fi
  case "${status}" in
    DOES_NOT_EXIST | CREATE_COMPLETE | UPDATE_COMPLETE | UPDATE_ROLLBACK_COMPLETE | IMPORT_COMPLETE) ;;
    *)
      print_stack_events "${name}"
      die "stack ${name} is in ${status}; fix it by hand before deploying again"
      ;;
  esac

  rm -f "${EXPORTS_CACHE}"
  params="${WORK_TMP}/${name}.parameters.json"
  write_parameters "${params}" "$@"

  if [[ "${status}" == DOES_NOT_EXIST ]]; then
    log "creating stack ${name} from ${template##*/}"
    awsr cloudformation create-stack --stack-name "${name}" \
      --template-body "file://${template}" \
      --parameters "file://${params}" \
      --capabilities CAPABILITY_IAM "${role_args[@]}" \
      --tags "Key=Environment,Value=${ENVIRONMENT_NAME}" "Key=Project,Value=medrobotics" \
      --output text >/dev/null \
      || die "create-stack ${name} was refused"
    wait_stack "${name}" CREATE_COMPLETE || die "stack ${name} failed to create"
  else
    log "updating stack ${name} from ${template##*/}"
    if ! out="$(awsr cloudformation update-stack --stack-name "${name}" \
        --template-body "file://${template}" \
        --parameters "file://${params}" \
        --capabilities CAPABILITY_IAM "${role_args[@]}" \
        --tags "Key=Environment,Value=${ENVIRONMENT_NAME}" "Key=Project,Value=medrobotics" \
        --output text 2>&1)"; then
      if [[ "${out}" == *"No updates are to be performed"* ]]; then
        log "stack ${name}: no updates are to be performed"
        return 0
      fi
      die "update-stack ${name} was refused: ${out}"
    fi
    wait_stack "${name}" UPDATE_COMPLETE || die "stack ${name} failed to update"
  fi
}

# Delete a stack (absent is fine) and wait for it to be gone.
delete_stack() {
  local name="$1" status role_args
  mapfile -t role_args < <(cfn_role_args)
  status="$(stack_status "${name}")"
  if [[ "${status}" == DOES_NOT_EXIST ]]; then
    log "stack ${name} does not exist"
    return 0
  fi
  rm -f "${EXPORTS_CACHE}"
  log "deleting stack ${name} (${status})"
  awsr cloudformation delete-stack --stack-name "${name}" "${role_args[@]}"
  wait_stack "${name}" DOES_NOT_EXIST || die "stack ${name} could not be deleted"
}
