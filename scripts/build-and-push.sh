#!/usr/bin/env bash
# Build both service images and push them to ECR, tagged with the git commit.
# Creates the repositories when missing. Tags are immutable: a tag names one
# image forever, so there is no moving `latest` (the task definitions name the
# commit), and a tag already in ECR is not built or pushed again.
#
#   ENVIRONMENT_NAME=medrobotics AWS_REGION=us-east-1 ./build-and-push.sh
#
# Optional: IMAGE_TAG (default: the git commit, -dirty-<hash> for uncommitted
# changes), DOCKER_PLATFORM (default linux/amd64, what the task definitions
# run), BASE_IMAGE (build argument BASE; default: the digest pinned in the
# Dockerfiles).
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
    # Repositories made before tags were immutable are switched over.
    awsr ecr put-image-tag-mutability --repository-name "${repo}" \
      --image-tag-mutability IMMUTABLE >/dev/null
  else
    log "creating repository ${repo}"
    # A tag names one image for good; every push is scanned.
    awsr ecr create-repository --repository-name "${repo}" \
      --image-scanning-configuration scanOnPush=true \
      --image-tag-mutability IMMUTABLE \
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

# The image labels org.opencontainers.image.{revision,created,version}.
REVISION="$(git -C "${REPO_ROOT}" rev-parse HEAD 2>/dev/null || printf '%s' "${TAG}")"
CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "${REPO_ROOT}/pyproject.toml" | head -n 1)"
[[ -n "${VERSION}" ]] || die "no version in ${REPO_ROOT}/pyproject.toml"
# The images copy src/, browser libraries included (the dashboard, Swagger UI, ReDoc); a fresh
# checkout has none until `make assets` fetches them from the npm registry.
if [[ ! -f "${REPO_ROOT}/src/medrobotics/ui/static/vendor/.installed" ]]; then
  require_tool make
  require_tool npm
  log "fetching the browser libraries (make assets)"
  make -C "${REPO_ROOT}" --no-print-directory assets
fi
base_args=()
if [[ -n "${BASE_IMAGE:-}" ]]; then
  base_args=(--build-arg "BASE=${BASE_IMAGE}")
fi

for service in "${SERVICES[@]}"; do
  image="${REGISTRY}/${ENVIRONMENT_NAME}-${service}"
  dockerfile="${REPO_ROOT}/services/${service}/Dockerfile"
  [[ -f "${dockerfile}" ]] || die "missing ${dockerfile}"
  if awsr ecr describe-images --repository-name "${ENVIRONMENT_NAME}-${service}" \
      --image-ids "imageTag=${TAG}" >/dev/null 2>&1; then
    log "${image}:${TAG} is already in ECR (tags are immutable); not building it again"
    continue
  fi
  log "building ${image}:${TAG}"
  # The repository root is the build context: the images install the package from src/.
  docker build --platform "${PLATFORM}" -f "${dockerfile}" "${base_args[@]}" \
    --build-arg "REVISION=${REVISION}" --build-arg "CREATED=${CREATED}" \
    --build-arg "VERSION=${VERSION}" \
    -t "${image}:${TAG}" "${REPO_ROOT}"
  docker push "${image}:${TAG}"
  log "pushed ${image}:${TAG}"
done

log "images tagged ${TAG}; roll them out with: IMAGE_TAG=${TAG} ./deploy-ecs.sh"
printf '%s\n' "${TAG}"
