"""The deployment pipeline: GitHub workflows and the OIDC deploy role they assume."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from infra_support import PIPELINE_TEMPLATE, REPO_ROOT, load_template

WORKFLOWS = REPO_ROOT / ".github" / "workflows"


@pytest.fixture(scope="module")
def oidc() -> dict:
    return load_template(PIPELINE_TEMPLATE)


def workflow(name: str) -> dict[str, Any]:
    # PyYAML reads the key `on` as True.
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))
    return data


def statements(role: dict) -> list[dict]:
    out = []
    for policy in role["Properties"]["Policies"]:
        out.extend(policy["PolicyDocument"]["Statement"])
    return out


def actions(statement: dict) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def resources_of(statement: dict) -> list:
    resource = statement["Resource"]
    return resource if isinstance(resource, list) else [resource]


def text_of(value: Any) -> str:
    """The template string of a resource ARN (plain, Fn::Sub or Fn::GetAtt)."""
    if isinstance(value, str):
        return value
    if "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    return str(value)


# ---------------------------------------------------------------- workflows


def test_pull_requests_run_the_projects_ci():
    ci = workflow("ci.yml")
    assert "pull_request" in ci["on"] and "workflow_call" in ci["on"]
    steps = [s.get("run", "") for job in ci["jobs"].values() for s in job["steps"]]
    for command in (
        "make lint",
        "make test",
        "bash .ci/infra.sh",
        "bash .ci/supply-chain.sh",
        "bash .ci/hadolint.sh",
    ):
        assert command in steps, command
    assert any(".ci/containers.sh" in s for s in steps)
    assert ci["permissions"] == {"contents": "read"}


def test_main_deploys_staging_then_production_after_ci():
    deploy = workflow("deploy.yml")
    assert deploy["on"]["push"]["branches"] == ["main"]
    jobs = deploy["jobs"]
    assert jobs["ci"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["staging"]["needs"] == "ci"
    assert jobs["production"]["needs"] == "staging"
    for name in ("staging", "production"):
        assert jobs[name]["uses"] == "./.github/workflows/deploy-environment.yml"
        assert jobs[name]["with"]["environment"] == name
        assert jobs[name]["permissions"]["id-token"] == "write"
    assert deploy["concurrency"]["cancel-in-progress"] is False


def test_each_environment_job_assumes_its_role_through_oidc_and_runs_the_scripts():
    called = workflow("deploy-environment.yml")
    (job,) = called["jobs"].values()
    # the GitHub environment: its protection rules (production's reviewers) apply here,
    # and its variables name the role, so the OIDC subject carries the environment
    assert job["environment"]["name"] == "${{ inputs.environment }}"
    steps = job["steps"]
    (credentials,) = [s for s in steps if "configure-aws-credentials" in s.get("uses", "")]
    assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}"
    text = (WORKFLOWS / "deploy-environment.yml").read_text()
    assert "aws-access-key-id" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    runs = [s.get("run") for s in steps if s.get("run")]
    assert runs == [
        "./scripts/build-and-push.sh",
        "./scripts/deploy-ecs.sh",
        "./scripts/verify-deployment.sh",
    ]
    assert job["env"]["CLOUDFORMATION_ROLE_ARN"] == "${{ vars.CLOUDFORMATION_ROLE_ARN }}"
    assert job["env"]["DOMAIN_NAME"] == "${{ vars.DOMAIN_NAME }}"


def test_actions_are_pinned_by_commit():
    for path in WORKFLOWS.glob("*.yml"):
        for uses in re.findall(r"uses:\s*(\S+)", path.read_text()):
            if uses.startswith("./"):
                continue
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", uses), (path.name, uses)


# ---------------------------------------------------------------- deploy role


def test_only_one_repository_environment_may_assume_the_deploy_role(oidc):
    provider = oidc["Resources"]["GitHubOidcProvider"]["Properties"]
    assert provider["Url"] == "https://token.actions.githubusercontent.com"
    assert provider["ClientIdList"] == ["sts.amazonaws.com"]
    (trust,) = oidc["Resources"]["DeployRole"]["Properties"]["AssumeRolePolicyDocument"][
        "Statement"
    ]
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    equals = trust["Condition"]["StringEquals"]
    assert equals["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    assert text_of(equals["token.actions.githubusercontent.com:sub"]) == (
        "repo:${GitHubOrg}/${GitHubRepo}:environment:${GitHubEnvironment}"
    )
    assert set(trust["Condition"]) == {"StringEquals"}, "no wildcard subject (StringLike)"


def test_deploy_role_is_least_privilege(oidc):
    role = oidc["Resources"]["DeployRole"]
    unscoped_reads = {
        "cloudformation:ListExports",
        "cloudformation:ValidateTemplate",
        "ecr:GetAuthorizationToken",
        "ecs:DescribeTaskDefinition",
        "logs:DescribeLogGroups",
    }
    for statement in statements(role):
        assert statement["Effect"] == "Allow"
        for action in actions(statement):
            assert "*" not in action, action
        if statement["Resource"] == "*":
            assert set(actions(statement)) <= unscoped_reads, statement["Sid"]
            continue
        for resource in resources_of(statement):
            arn = text_of(resource)
            assert (
                "${EnvironmentName}" in arn
                or "CloudFormationExecutionRole" in arn
                or ("AWSServiceRoleForECS" in arn)
            ), (statement["Sid"], arn)
    by_sid = {s["Sid"]: s for s in statements(role)}
    # stacks change only through the execution role; the role never deletes a stack
    all_actions = {a for s in statements(role) for a in actions(s)}
    assert "cloudformation:DeleteStack" not in all_actions
    pass_cfn = by_sid["PassOnlyTheExecutionRole"]
    assert pass_cfn["Resource"] == {"Fn::GetAtt": ["CloudFormationExecutionRole", "Arn"]}
    assert pass_cfn["Condition"] == {
        "StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}
    }
    assert text_of(by_sid["StacksOfTheEnvironment"]["Resource"]).endswith(
        ":stack/${EnvironmentName}-*/*"
    )
    run_task = by_sid["MigrationTask"]
    assert actions(run_task) == ["ecs:RunTask"]
    assert text_of(run_task["Resource"]).endswith(":task-definition/${EnvironmentName}-migrate:*")


def test_cloudformation_role_writes_only_the_environments_resources(oidc):
    role = oidc["Resources"]["CloudFormationExecutionRole"]
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "cloudformation.amazonaws.com"}
    without_resource_level = {
        "ecs:RegisterTaskDefinition",
        "ecs:DeregisterTaskDefinition",
        "kms:CreateKey",
        "acm:RequestCertificate",
        "application-autoscaling:RegisterScalableTarget",
        "application-autoscaling:DeregisterScalableTarget",
        "application-autoscaling:PutScalingPolicy",
        "application-autoscaling:DeleteScalingPolicy",
    }
    read = re.compile(r"^[\w-]+:(Describe|List|Get)\w*\*?$")
    for statement in statements(role):
        for action in actions(statement):
            assert action != "*" and not action.endswith(":*"), action
        if statement["Resource"] == "*":
            writes = {a for a in actions(statement) if not read.match(a)}
            assert writes <= without_resource_level, (statement["Sid"], writes)
    iam = next(s for s in statements(role) if "iam:CreateRole" in actions(s))
    assert [text_of(r) for r in resources_of(iam)] == [
        "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${EnvironmentName}-ecs-tasks-*"
    ]
