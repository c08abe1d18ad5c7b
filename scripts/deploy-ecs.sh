#!/usr/bin/env bash
# Deploy the ECS platform, in order: (optional foundation), cluster, load
# balancer, task definitions, the one-off database migration, services (with
# the lake archiver), then the lake catalog (Glue tables, Athena workgroup).
# Safe to run again: every stack is created or updated, "no updates" is fine.
#
#   ENVIRONMENT_NAME=medrobotics AWS_REGION=us-east-1 RDS_PASSWORD=... ./deploy-ecs.sh
#
# Optional settings (see docs/deployment.md):
#   DEPLOY_FOUNDATION=true      also deploy 00-foundation.yaml (fresh account)
#   IMAGE_TAG                   image tag to run (default: the git commit, as build-and-push.sh tags it)
#   RDS_USER                    database user stored with RDS_PASSWORD (default medrobotics)
#   DOMAIN_NAME                 name of the services: HTTPS on 443 with a DNS-validated ACM
#                               certificate, HTTP answers 301 (empty: plain HTTP, trials only)
#   HOSTED_ZONE_ID              public Route 53 zone of DOMAIN_NAME (validation, alias record)
#   CERTIFICATE_ARN             existing ACM certificate for DOMAIN_NAME instead of a new one
#   CLOUDFORMATION_ROLE_ARN     role CloudFormation deploys the stacks with (the pipeline's)
#   ENABLE_WAF / WEB_ACL_ARN    create a WAF web ACL (default true) / attach an existing one
#   ALB_DELETION_PROTECTION     default true
#   ENABLE_EXECUTE_COMMAND      ECS Exec into the tasks (default false)
#   ALARM_EMAIL                 subscribe an address to the alarm topic
#   MEDROBOTICS_BOOTSTRAP_KEY   stored as the secret ${ENVIRONMENT_NAME}/bootstrap-key and injected
#   SKIP_MIGRATION=true         do not run the migration task (the schema is known to be current)
#   ATHENA_BYTES_SCANNED_CUTOFF bytes one Athena query may scan (default 10 GiB)
#   CREATE_ANALYST_POLICY       create the lake's analyst managed policy (default true)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

require_env ENVIRONMENT_NAME AWS_REGION
check_environment_name
require_tool aws

ENV_NAME="${ENVIRONMENT_NAME}"
FOUNDATION_STACK="${ENV_NAME}-foundation"
CLUSTER_STACK="${ENV_NAME}-ecs-cluster"
ALB_STACK="${ENV_NAME}-alb"
TASKS_STACK="${ENV_NAME}-ecs-tasks"
SERVICES_STACK="${ENV_NAME}-ecs-services"
CATALOG_STACK="${ENV_NAME}-lake-catalog"
TAG="$(image_tag)"
EXEC="${ENABLE_EXECUTE_COMMAND:-false}"

# ---------------------------------------------------------------- service-linked role
# A fresh account has no ECS service-linked role until ECS first makes it, and
# a cluster created by CloudFormation before that can fail. Create it once.
ensure_ecs_service_linked_role() {
  local out
  if awsr iam get-role --role-name AWSServiceRoleForECS >/dev/null 2>&1; then
    return 0
  fi
  if out="$(awsr iam create-service-linked-role --aws-service-name ecs.amazonaws.com 2>&1)"; then
    log "created the ECS service-linked role AWSServiceRoleForECS"
  elif [[ "${out}" == *"has been taken"* || "${out}" == *EntityAlreadyExists* ]]; then
    # Created meanwhile (another deploy, or ECS itself): what we wanted.
    log "the ECS service-linked role exists"
  else
    die "cannot create the ECS service-linked role: ${out}"
  fi
}
ensure_ecs_service_linked_role

# ---------------------------------------------------------------- foundation
if [[ "${DEPLOY_FOUNDATION:-false}" == true ]]; then
  deploy_stack "${FOUNDATION_STACK}" "${CFN_DIR}/00-foundation.yaml" \
    "EnvironmentName=${ENV_NAME}" \
    "DatabaseDeletionProtection=${DATABASE_DELETION_PROTECTION:-true}"
fi

log "checking the prerequisite exports"
missing=()
for export_name in VPC VpcCidr PublicSubnet1 PublicSubnet2 PrivateSubnet1 PrivateSubnet2 \
    DatabaseSecurityGroup DatabaseEndpoint DatabasePort DatabaseName RawDataBucket; do
  if [[ -z "$(export_value "${ENV_NAME}-${export_name}")" ]]; then
    missing+=("${ENV_NAME}-${export_name}")
  fi
done
if ((${#missing[@]})); then
  die "missing exports: ${missing[*]} (deploy the earlier phase, or run with DEPLOY_FOUNDATION=true)"
fi

# ---------------------------------------------------------------- secrets
# A secret scheduled for deletion (by cleanup.sh, or by hand) comes back: the
# tasks read it at every start.
restore_if_deleted() {
  local secret="$1" deleted
  if ! deleted="$(awsr secretsmanager describe-secret --secret-id "${secret}" \
      --query DeletedDate --output text)"; then
    log "WARNING: cannot describe secret ${secret}; if it is scheduled for deletion, restore it"
    return 0
  fi
  if [[ "${deleted}" != None ]]; then
    awsr secretsmanager restore-secret --secret-id "${secret}" >/dev/null
    log "restored secret ${secret}, which was scheduled for deletion"
  fi
}

# Create or update a secret from a file (the value never appears on a command
# line or in a stack parameter); print its ARN. Secrets made here carry the tag
# CreatedBy=deploy-ecs.sh: cleanup.sh deletes those and no others.
upsert_secret() {
  local name="$1" description="$2" payload="$3" arn
  if arn="$(awsr secretsmanager describe-secret --secret-id "${name}" \
      --query ARN --output text 2>/dev/null)"; then
    restore_if_deleted "${arn}"
    awsr secretsmanager put-secret-value --secret-id "${arn}" \
      --secret-string "file://${payload}" >/dev/null
    log "updated secret ${name}"
  else
    arn="$(awsr secretsmanager create-secret --name "${name}" \
      --description "${description}" \
      --secret-string "file://${payload}" \
      --tags "Key=Environment,Value=${ENV_NAME}" "Key=CreatedBy,Value=deploy-ecs.sh" \
      --query ARN --output text)"
    log "created secret ${name}"
  fi
  printf '%s\n' "${arn}"
}

umask 077
DB_SECRET_ARN="$(export_value "${ENV_NAME}-DatabaseSecretArn")"
SECRETS_KMS_KEY_ARN="$(export_value "${ENV_NAME}-DatabaseSecretKmsKeyArn")"
if [[ -n "${DB_SECRET_ARN}" ]]; then
  log "database credentials: secret exported by the foundation stack"
  restore_if_deleted "${DB_SECRET_ARN}"
  if [[ -n "${RDS_PASSWORD:-}" ]]; then
    log "RDS_PASSWORD is ignored: the foundation's generated secret is the database's password"
  fi
else
  [[ -n "${RDS_PASSWORD:-}" ]] \
    || die "RDS_PASSWORD must be set (no ${ENV_NAME}-DatabaseSecretArn export to use instead)"
  payload="${WORK_TMP}/rds-credentials.json"
  printf '{"username":"%s","password":"%s"}' \
    "$(json_escape "${RDS_USER:-medrobotics}")" "$(json_escape "${RDS_PASSWORD}")" >"${payload}"
  DB_SECRET_ARN="$(upsert_secret "${ENV_NAME}/rds-credentials" \
    "Credentials of the ${ENV_NAME} database, injected into the ECS tasks" "${payload}")"
  rm -f "${payload}"
fi

BOOTSTRAP_SECRET_ARN=""
if [[ -n "${MEDROBOTICS_BOOTSTRAP_KEY:-}" ]]; then
  payload="${WORK_TMP}/bootstrap-key"
  printf '%s' "${MEDROBOTICS_BOOTSTRAP_KEY}" >"${payload}"
  BOOTSTRAP_SECRET_ARN="$(upsert_secret "${ENV_NAME}/bootstrap-key" \
    "Bootstrap admin API key of ${ENV_NAME}" "${payload}")"
  rm -f "${payload}"
fi

# The key of the lake's patient hash: the foundation's, else one generated here the first
# time. An existing key is never replaced: patient keys already in the lake were made with it.
HASH_KEY_SECRET_ARN="$(export_value "${ENV_NAME}-LakeHashKeySecretArn")"
if [[ -n "${HASH_KEY_SECRET_ARN}" ]]; then
  log "lake hash key: secret exported by the foundation stack"
  restore_if_deleted "${HASH_KEY_SECRET_ARN}"
elif HASH_KEY_SECRET_ARN="$(awsr secretsmanager describe-secret \
    --secret-id "${ENV_NAME}/medrobotics/lake-hash-key" --query ARN --output text 2>/dev/null)"; then
  log "lake hash key: the existing secret ${ENV_NAME}/medrobotics/lake-hash-key"
  restore_if_deleted "${HASH_KEY_SECRET_ARN}"
else
  payload="${WORK_TMP}/lake-hash-key"
  # 256 random bits as 64 hex digits, straight into the file.
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"${payload}"
  HASH_KEY_SECRET_ARN="$(upsert_secret "${ENV_NAME}/medrobotics/lake-hash-key" \
    "Key of the keyed hash that replaces patient ids in the ${ENV_NAME} lake (never replace it)" \
    "${payload}")"
  rm -f "${payload}"
fi
umask 022

# ---------------------------------------------------------------- images
for service in "${SERVICES[@]}"; do
  awsr ecr describe-images --repository-name "${ENV_NAME}-${service}" \
    --image-ids "imageTag=${TAG}" >/dev/null 2>&1 \
    || die "image ${ENV_NAME}-${service}:${TAG} is not in ECR; run ./build-and-push.sh first"
done
log "deploying images tagged ${TAG}"

# ---------------------------------------------------------------- cluster
# The log groups outlive their stack (DeletionPolicy Retain); a new cluster
# stack cannot create them again under the same names.
if [[ "$(stack_status "${CLUSTER_STACK}")" == DOES_NOT_EXIST ]]; then
  leftover="$(awsr logs describe-log-groups --log-group-name-prefix "/aws/ecs/${ENV_NAME}/" \
    --query 'logGroups[].logGroupName' --output text)"
  if [[ -n "${leftover}" && "${leftover}" != None ]]; then
    die "log groups left by an earlier deployment: ${leftover}; export what you need, then run ./cleanup.sh --yes (it deletes them)"
  fi
fi
deploy_stack "${CLUSTER_STACK}" "${CFN_DIR}/01-ecs-cluster.yaml" \
  "EnvironmentName=${ENV_NAME}"

# ---------------------------------------------------------------- load balancer
if [[ -n "${DOMAIN_NAME:-}" ]]; then
  [[ -n "${HOSTED_ZONE_ID:-}" || -n "${CERTIFICATE_ARN:-}" ]] \
    || die "DOMAIN_NAME needs HOSTED_ZONE_ID (its public Route 53 zone) or CERTIFICATE_ARN"
  log "HTTPS on https://${DOMAIN_NAME}"
else
  [[ -z "${CERTIFICATE_ARN:-}" ]] \
    || die "CERTIFICATE_ARN needs DOMAIN_NAME: a certificate cannot carry the load balancer's own name"
  log "WARNING: DOMAIN_NAME is not set: the load balancer serves PLAIN HTTP."
  log "WARNING: API keys and patient data would cross the internet unencrypted;"
  log "WARNING: use this for a trial with no real data only, and set DOMAIN_NAME and HOSTED_ZONE_ID."
fi
deploy_stack "${ALB_STACK}" "${CFN_DIR}/02-alb.yaml" \
  "EnvironmentName=${ENV_NAME}" \
  "DomainName=${DOMAIN_NAME:-}" \
  "HostedZoneId=${HOSTED_ZONE_ID:-}" \
  "CertificateArn=${CERTIFICATE_ARN:-}" \
  "EnableWaf=${ENABLE_WAF:-true}" \
  "ExistingWebAclArn=${WEB_ACL_ARN:-}" \
  "DeletionProtection=${ALB_DELETION_PROTECTION:-true}"

# ---------------------------------------------------------------- task definitions
deploy_stack "${TASKS_STACK}" "${CFN_DIR}/03-ecs-task-definitions.yaml" \
  "EnvironmentName=${ENV_NAME}" \
  "ImageTag=${TAG}" \
  "DatabaseSecretArn=${DB_SECRET_ARN}" \
  "SecretsKmsKeyArn=${SECRETS_KMS_KEY_ARN}" \
  "BootstrapKeySecretArn=${BOOTSTRAP_SECRET_ARN}" \
  "LakeHashKeySecretArn=${HASH_KEY_SECRET_ARN}" \
  "LakeKmsKeyArn=$(export_value "${ENV_NAME}-RawDataKmsKeyArn")" \
  "EnableExecuteCommand=${EXEC}"

CLUSTER="$(stack_output "${CLUSTER_STACK}" ClusterName)"
INGESTION_TASK_DEF="$(stack_output "${TASKS_STACK}" DataIngestionTaskDefinitionArn)"
API_TASK_DEF="$(stack_output "${TASKS_STACK}" ApiServiceTaskDefinitionArn)"
ARCHIVER_TASK_DEF="$(stack_output "${TASKS_STACK}" ArchiverTaskDefinitionArn)"

# ---------------------------------------------------------------- migration
# The schema moves before any task of the new revision takes traffic; a
# failed migration stops the deployment with the services untouched.
run_migration() {
  local task_def sg subnets task_arn status exit_code reason deadline
  task_def="$(stack_output "${TASKS_STACK}" MigrationTaskDefinitionArn)"
  sg="$(stack_output "${TASKS_STACK}" MigrationSecurityGroupId)"
  subnets="$(export_value "${ENV_NAME}-PrivateSubnet1"),$(export_value "${ENV_NAME}-PrivateSubnet2")"
  log "running the migration task ${task_def##*/}"
  task_arn="$(awsr ecs run-task --cluster "${CLUSTER}" --task-definition "${task_def}" \
    --capacity-provider-strategy capacityProvider=FARGATE,weight=1 \
    --network-configuration "awsvpcConfiguration={subnets=[${subnets}],securityGroups=[${sg}],assignPublicIp=DISABLED}" \
    --started-by deploy-ecs-migrate \
    --query 'tasks[0].taskArn' --output text)"
  [[ -n "${task_arn}" && "${task_arn}" != None ]] || die "the migration task did not start"
  deadline=$((SECONDS + TASK_TIMEOUT_SECONDS))
  while true; do
    status="$(awsr ecs describe-tasks --cluster "${CLUSTER}" --tasks "${task_arn}" \
      --query 'tasks[0].lastStatus' --output text)"
    [[ "${status}" == STOPPED ]] && break
    if ((SECONDS >= deadline)); then
      awsr ecs stop-task --cluster "${CLUSTER}" --task "${task_arn}" \
        --reason "deploy-ecs.sh: migration timed out" >/dev/null || true
      die "the migration task was still ${status} after ${TASK_TIMEOUT_SECONDS}s; stopped it"
    fi
    sleep "${POLL_SECONDS}"
  done
  exit_code="$(awsr ecs describe-tasks --cluster "${CLUSTER}" --tasks "${task_arn}" \
    --query "tasks[0].containers[?name=='migrate'].exitCode | [0]" --output text)"
  if [[ "${exit_code}" != 0 ]]; then
    reason="$(awsr ecs describe-tasks --cluster "${CLUSTER}" --tasks "${task_arn}" \
      --query 'tasks[0].stoppedReason' --output text)"
    die "the migration failed (exit code ${exit_code}, ${reason}); see: aws logs tail /aws/ecs/${ENV_NAME}/migrate"
  fi
  log "migration complete"
}

if [[ "${SKIP_MIGRATION:-false}" == true ]]; then
  log "SKIP_MIGRATION=true: not running the migration task"
else
  run_migration
fi

# ---------------------------------------------------------------- services
# A failed update rolls the services back to the revisions they ran before;
# the tasks stack keeps those revisions ACTIVE (UpdateReplacePolicy Retain), so
# the rollback completes. Say where the services are now.
report_services_rollback() {
  local status revision state
  status="$(stack_status "${SERVICES_STACK}")"
  log "stack ${SERVICES_STACK} is ${status}; the services run these task definitions:"
  for revision in $(awsr cloudformation describe-stacks --stack-name "${SERVICES_STACK}" \
      --query "Stacks[0].Parameters[?ends_with(ParameterKey, 'TaskDefinitionArn')].ParameterValue" \
      --output text); do
    state="$(awsr ecs describe-task-definition --task-definition "${revision}" \
      --query taskDefinition.status --output text 2>/dev/null || printf 'UNKNOWN')"
    log "  ${revision##*/} (${state})"
  done
}
on_services_exit() {
  local rc=$?
  if ((rc)) && [[ "$(stack_status "${SERVICES_STACK}")" == UPDATE_ROLLBACK_COMPLETE ]]; then
    report_services_rollback
    log "the services were not moved to ${TAG}; fix the cause and deploy again"
  fi
  rm -rf "${WORK_TMP}"
}
trap on_services_exit EXIT
deploy_stack "${SERVICES_STACK}" "${CFN_DIR}/04-ecs-services.yaml" \
  "EnvironmentName=${ENV_NAME}" \
  "DataIngestionTaskDefinitionArn=${INGESTION_TASK_DEF}" \
  "ApiServiceTaskDefinitionArn=${API_TASK_DEF}" \
  "ArchiverTaskDefinitionArn=${ARCHIVER_TASK_DEF}" \
  "EnableExecuteCommand=${EXEC}" \
  "AlarmEmail=${ALARM_EMAIL:-}"
trap 'rm -rf "${WORK_TMP}"' EXIT

# ---------------------------------------------------------------- lake catalog
# Glue tables with partition projection (no crawler) and the Athena workgroup.
deploy_stack "${CATALOG_STACK}" "${CFN_DIR}/06-lake-catalog.yaml" \
  "EnvironmentName=${ENV_NAME}" \
  "LakeKmsKeyArn=$(export_value "${ENV_NAME}-RawDataKmsKeyArn")" \
  "BytesScannedCutoffPerQuery=${ATHENA_BYTES_SCANNED_CUTOFF:-10737418240}" \
  "CreateAnalystPolicy=${CREATE_ANALYST_POLICY:-true}"

log "deployed ${ENV_NAME} at $(stack_output "${ALB_STACK}" LoadBalancerURL)"
log "transport: $(stack_output "${ALB_STACK}" TransportSecurity)"
if [[ -z "${DOMAIN_NAME:-}" ]]; then
  log "WARNING: plain HTTP: a trial deployment; set DOMAIN_NAME and HOSTED_ZONE_ID before real data flows"
fi
log "lake: Athena workgroup $(stack_output "${CATALOG_STACK}" WorkGroupName), database $(stack_output "${CATALOG_STACK}" LakeDatabaseName)"
log "check it with: ./verify-deployment.sh"
