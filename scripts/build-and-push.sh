#!/usr/bin/env bash
# Build both service images and push them to ECR, tagged with the git commit
# and with latest. Creates the repositories when missing.
#
#   ENVIRONMENT_NAME=medrobotics AWS_REGION=us-east-1 ./build-and-push.sh
#
# Optional: IMAGE_TAG (default: the git commit, -dirty for uncommitted changes),
# DOCKER_PLATFORM (default linux/amd64, what the task definitions run).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

require_env ENVIRONMENT_NAME AWS_REGION
check_environment_name
require_tool aws
require_tool docker

TAG="$(image_tag)"
PLATFORM="${DOCKER_PLATFORM:-linux/amd64}"
ACCOUNT_ID="$(awsr sts get-caller-identity --query Account --output text)"
REGISTRY="${ACCOUNT_ID}.dkr.ecr.${AWS_REGION}.amazonaws.com"

# Keep the last 30 tagged images and drop untagged layers after a day.
LIFECYCLE_POLICY='{"rules":[
 {"rulePriority":1,"description":"drop untagged images","selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":1},"action":{"type":"expire"}},
 {"rulePriority":2,"description":"keep the last 30 images","selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":30},"action":{"type":"expire"}}]}'

ensure_repository() {
  local repo="$1"
  if awsr ecr describe-repositories --repository-names "${repo}" >/dev/null 2>&1; then
    log "repository ${repo} exists"
  else
    log "creating repository ${repo}"
    # latest moves with every push, so tags stay mutable; every push is scanned.
    awsr ecr create-repository --repository-name "${repo}" \
      --image-scanning-configuration scanOnPush=true \
      --image-tag-mutability MUTABLE \
      --encryption-configuration encryptionType=AES256 \
      --tags "Key=Environment,Value=${ENVIRONMENT_NAME}" >/dev/null
  fi
  awsr ecr put-lifecycle-policy --repository-name "${repo}" \
    --lifecycle-policy-text "${LIFECYCLE_POLICY}" >/dev/null
}

for service in "${SERVICES[@]}"; do
  ensure_repository "${ENVIRONMENT_NAME}-${service}"
done

log "logging in to ${REGISTRY}"
awsr ecr get-login-password | docker login --username AWS --password-stdin "${REGISTRY}"

for service in "${SERVICES[@]}"; do
  image="${REGISTRY}/${ENVIRONMENT_NAME}-${service}"
  dockerfile="${REPO_ROOT}/services/${service}/Dockerfile"
  [[ -f "${dockerfile}" ]] || die "missing ${dockerfile}"
  log "building ${image}:${TAG}"
  # The repository root is the build context: the images install the package from src/.
  docker build --platform "${PLATFORM}" -f "${dockerfile}" \
    -t "${image}:${TAG}" -t "${image}:latest" "${REPO_ROOT}"
  docker push "${image}:${TAG}"
  docker push "${image}:latest"
  log "pushed ${image}:${TAG} and :latest"
done

log "images tagged ${TAG}; roll them out with: IMAGE_TAG=${TAG} ./deploy-ecs.sh"
printf '%s\n' "${TAG}"
