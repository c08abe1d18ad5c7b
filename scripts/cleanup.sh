#!/usr/bin/env bash
# Remove a deployment in reverse order: lake catalog (its query results
# first), services, task definitions, load balancer, cluster, (foundation with
# --foundation), then the task definition revisions the tasks stack retains,
# the ECR repositories, the secrets deploy-ecs.sh created (never the
# foundation's) and the retained log groups.
#
#   ENVIRONMENT_NAME=medrobotics AWS_REGION=us-east-1 ./cleanup.sh --yes [--foundation] [--keep-logs] [--keep-images]
#
# Kept on purpose: the load balancer access-log bucket and, with the
# foundation, the raw-data bucket, the key of the lake's patient hash (the
# lake in that bucket was keyed with it) and a final database snapshot.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

confirmed=false
with_foundation=false
keep_logs=false
keep_images=false
for arg in "$@"; do
  case "${arg}" in
    --yes) confirmed=true ;;
    --foundation) with_foundation=true ;;
    --keep-logs) keep_logs=true ;;
    --keep-images) keep_images=true ;;
    *) die "unknown argument ${arg} (expected --yes, --foundation, --keep-logs, --keep-images)" ;;
  esac
done

require_env ENVIRONMENT_NAME AWS_REGION
check_environment_name
require_tool aws
ENV_NAME="${ENVIRONMENT_NAME}"

if [[ "${confirmed}" != true ]]; then
  log "this deletes the ${ENV_NAME} ECS deployment in ${AWS_REGION}; run again with --yes"
  exit 1
fi

# The database secret the foundation (or an earlier phase) exports belongs to
# the database, which outlives this cleanup: read it before any stack goes.
EXPORTED_SECRET_ARN="$(export_value "${ENV_NAME}-DatabaseSecretArn")"

# ---------------------------------------------------------------- stacks
# The Athena results bucket goes with its stack, which CloudFormation cannot delete while
# the bucket holds results: empty it first (results only, never versioned).
if [[ "$(stack_status "${ENV_NAME}-lake-catalog")" != DOES_NOT_EXIST ]]; then
  results="$(awsr cloudformation describe-stacks --stack-name "${ENV_NAME}-lake-catalog" \
    --query "Stacks[0].Outputs[?OutputKey=='QueryResultsBucketName'].OutputValue" --output text)"
  if [[ -n "${results}" && "${results}" != None ]]; then
    awsr s3 rm "s3://${results}" --recursive --quiet
    log "emptied the query results bucket ${results}"
  fi
fi
delete_stack "${ENV_NAME}-lake-catalog"
delete_stack "${ENV_NAME}-ecs-services"
delete_stack "${ENV_NAME}-ecs-tasks"

# Task definitions outlive their stack (DeletionPolicy Retain, so that a
# services rollback finds its revisions); with the services gone they go too.
for family in data-ingestion api-service archiver migrate; do
  for revision in $(awsr ecs list-task-definitions --family-prefix "${ENV_NAME}-${family}" \
      --status ACTIVE --query taskDefinitionArns --output text); do
    # The prefix also matches longer family names: only this family's revisions.
    [[ "${revision}" =~ :task-definition/${ENV_NAME}-${family}:[0-9]+$ ]] || continue
    awsr ecs deregister-task-definition --task-definition "${revision}" >/dev/null
    log "deregistered task definition ${revision##*/}"
  done
done

# Deletion protection is lifted only here, right before the stack goes.
if [[ "$(stack_status "${ENV_NAME}-alb")" != DOES_NOT_EXIST ]]; then
  lb_arn="$(awsr cloudformation describe-stacks --stack-name "${ENV_NAME}-alb" \
    --query "Stacks[0].Outputs[?OutputKey=='LoadBalancerArn'].OutputValue" --output text)"
  if [[ -n "${lb_arn}" && "${lb_arn}" != None ]]; then
    awsr elbv2 modify-load-balancer-attributes --load-balancer-arn "${lb_arn}" \
      --attributes Key=deletion_protection.enabled,Value=false >/dev/null
  fi
fi
delete_stack "${ENV_NAME}-alb"
delete_stack "${ENV_NAME}-ecs-cluster"

if [[ "${with_foundation}" == true ]]; then
  log "the database keeps a final snapshot; deletion fails while DatabaseDeletionProtection is true"
  delete_stack "${ENV_NAME}-foundation"
fi

# ---------------------------------------------------------------- images
if [[ "${keep_images}" != true ]]; then
  for service in "${SERVICES[@]}"; do
    if awsr ecr describe-repositories --repository-names "${ENV_NAME}-${service}" >/dev/null 2>&1; then
      awsr ecr delete-repository --repository-name "${ENV_NAME}-${service}" --force >/dev/null
      log "deleted repository ${ENV_NAME}-${service}"
    fi
  done
fi

# ---------------------------------------------------------------- secrets
# Only the secrets deploy-ecs.sh created (tag CreatedBy=deploy-ecs.sh, or the
# Environment tag it set before that tag existed). Never a secret CloudFormation
# manages (the foundation's <env>/rds-credentials has the same name: it goes
# with its stack) and never the database secret a stack exports: the database
# would stay and its tasks could no longer read its password. Recoverable for
# 7 days; deploy-ecs.sh restores a secret scheduled for deletion (the lake hash
# key too: restored within the 7 days, patient keys stay linkable across the
# redeployment; after them a new key is generated).
for secret in "${ENV_NAME}/rds-credentials" "${ENV_NAME}/bootstrap-key" \
    "${ENV_NAME}/medrobotics/lake-hash-key"; do
  if ! line="$(awsr secretsmanager describe-secret --secret-id "${secret}" \
      --query "[ARN, DeletedDate, Tags[?Key=='CreatedBy'].Value | [0], Tags[?Key=='Environment'].Value | [0], Tags[?Key=='aws:cloudformation:stack-name'].Value | [0]]" \
      --output text 2>/dev/null)"; then
    continue
  fi
  read -r arn deleted created_by environment cfn_stack <<<"${line}"
  if [[ "${deleted}" != None ]]; then
    continue  # already scheduled for deletion
  fi
  if [[ "${cfn_stack}" != None ]]; then
    log "keeping secret ${secret}: it belongs to the stack ${cfn_stack}"
    continue
  fi
  if [[ -n "${EXPORTED_SECRET_ARN}" && "${arn}" == "${EXPORTED_SECRET_ARN}" ]]; then
    log "keeping secret ${secret}: it is the database secret ${ENV_NAME}-DatabaseSecretArn exports"
    continue
  fi
  if [[ "${created_by}" != deploy-ecs.sh && "${environment}" != "${ENV_NAME}" ]]; then
    log "keeping secret ${secret}: deploy-ecs.sh did not create it"
    continue
  fi
  awsr secretsmanager delete-secret --secret-id "${arn}" --recovery-window-in-days 7 >/dev/null
  log "scheduled secret ${secret} for deletion in 7 days"
done

# ---------------------------------------------------------------- logs
if [[ "${keep_logs}" == true ]]; then
  log "keeping the log groups /aws/ecs/${ENV_NAME}/* (a new deployment needs them gone)"
else
  for group in "/aws/ecs/${ENV_NAME}/data-ingestion" "/aws/ecs/${ENV_NAME}/api-service" \
      "/aws/ecs/${ENV_NAME}/archiver" "/aws/ecs/${ENV_NAME}/migrate" "aws-waf-logs-${ENV_NAME}"; do
    if [[ -n "$(awsr logs describe-log-groups --log-group-name-prefix "${group}" \
        --query "logGroups[?logGroupName=='${group}'].logGroupName" --output text)" ]]; then
      awsr logs delete-log-group --log-group-name "${group}"
      log "deleted log group ${group}"
    fi
  done
fi

log "cleanup of ${ENV_NAME} complete (the access-log bucket is kept)"
