"""Script behaviour against a stand-in `aws` that answers what a test scripts.

Covers what the emulator cannot produce: stacks that roll back, "no updates",
a stack stuck in progress, missing stacks and exports, a failing migration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from infra_support import HERE, SCRIPTS_DIR, bin_dir_with, find_tool, make_sandbox

ENV = "medrobotics"
TEMPLATE = str(SCRIPTS_DIR.parent / "cloudformation" / "01-ecs-cluster.yaml")
MISSING = {"__error__": "(ValidationError) Stack with id {} does not exist"}


def stack(status: str, outputs: dict[str, str] | None = None) -> dict:
    return {
        "Stacks": [
            {
                "StackStatus": status,
                "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in (outputs or {}).items()],
            }
        ]
    }


EVENTS = {
    "StackEvents": [
        {
            "Timestamp": "2026-01-01T00:00:00Z",
            "LogicalResourceId": "Cluster",
            "ResourceType": "AWS::ECS::Cluster",
            "ResourceStatus": "CREATE_FAILED",
            "ResourceStatusReason": "EVENT-MARKER quota exceeded",
        }
    ]
}


class FakeAws:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.log = tmp / "aws.log"
        self.scenario_file = tmp / "scenario.json"
        find_tool("bash")
        self.bin = bin_dir_with(
            tmp / "bin", aws=f"{sys.executable} {HERE / 'fakeaws' / 'fake_aws.py'}"
        )

    def run(self, scenario: dict, argv: list[str], cwd: Path, **env: str):
        self.scenario_file.write_text(json.dumps(scenario))
        for suffix in ("", ".state", ".secrets"):
            Path(f"{self.log}{suffix}").unlink(missing_ok=True)
        full_env = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "FAKE_AWS_SCENARIO": str(self.scenario_file),
            "FAKE_AWS_LOG": str(self.log),
            "ENVIRONMENT_NAME": ENV,
            "AWS_REGION": "us-east-1",
            "POLL_SECONDS": "0",
            "STACK_TIMEOUT_SECONDS": "3",
            "TASK_TIMEOUT_SECONDS": "3",
            "IMAGE_TAG": "abc123",
            **env,
        }
        return subprocess.run(
            argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60
        )

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def ops(self) -> list[str]:
        return [" ".join(c[2:4]) if c[0] == "--region" else " ".join(c[:2]) for c in self.calls()]


@pytest.fixture
def fake(tmp_path):
    return FakeAws(tmp_path)


def deploy_stack(fake: FakeAws, scenario: dict, **env: str):
    driver = (
        f'set -euo pipefail; source "{SCRIPTS_DIR}/lib.sh"; '
        f'deploy_stack {ENV}-ecs-cluster "{TEMPLATE}" EnvironmentName={ENV}'
    )
    return fake.run(scenario, ["bash", "-c", driver], SCRIPTS_DIR, **env)


# ---------------------------------------------------------------- deploy_stack


def test_create_that_rolls_back_fails_and_prints_events(fake):
    result = deploy_stack(
        fake,
        {
            "cloudformation describe-stacks": [
                MISSING,
                stack("CREATE_IN_PROGRESS"),
                stack("ROLLBACK_COMPLETE"),
            ],
            "cloudformation create-stack": {"StackId": "id"},
            "cloudformation describe-stack-events": EVENTS,
        },
    )
    assert result.returncode != 0
    assert "ROLLBACK_COMPLETE" in result.stderr
    assert "EVENT-MARKER" in result.stderr
    assert "cloudformation create-stack" in fake.ops()


def test_update_with_no_changes_succeeds(fake):
    result = deploy_stack(
        fake,
        {
            "cloudformation describe-stacks": stack("UPDATE_COMPLETE"),
            "cloudformation update-stack": {
                "__error__": "(ValidationError) when calling the UpdateStack operation: "
                "No updates are to be performed."
            },
        },
    )
    assert result.returncode == 0, result.stderr
    assert "no updates are to be performed" in result.stderr
    assert "cloudformation create-stack" not in fake.ops()


def test_update_refused_for_another_reason_fails(fake):
    result = deploy_stack(
        fake,
        {
            "cloudformation describe-stacks": stack("CREATE_COMPLETE"),
            "cloudformation update-stack": {"__error__": "(ValidationError) Template format error"},
        },
    )
    assert result.returncode != 0
    assert "Template format error" in result.stderr


def test_update_that_rolls_back_fails(fake):
    result = deploy_stack(
        fake,
        {
            "cloudformation describe-stacks": [
                stack("UPDATE_COMPLETE"),
                stack("UPDATE_IN_PROGRESS"),
                stack("UPDATE_ROLLBACK_COMPLETE"),
            ],
            "cloudformation update-stack": {"StackId": "id"},
            "cloudformation describe-stack-events": EVENTS,
        },
    )
    assert result.returncode != 0
    assert "UPDATE_ROLLBACK_COMPLETE" in result.stderr
    assert "EVENT-MARKER" in result.stderr


def test_leftover_rollback_complete_is_deleted_and_created_again(fake):
    result = deploy_stack(
        fake,
        {
            "cloudformation describe-stacks": [
                stack("ROLLBACK_COMPLETE"),
                stack("DELETE_IN_PROGRESS"),
                MISSING,
                stack("CREATE_COMPLETE"),
            ],
            "cloudformation describe-stack-events": EVENTS,
            "cloudformation delete-stack": {},
            "cloudformation create-stack": {"StackId": "id"},
        },
    )
    assert result.returncode == 0, result.stderr
    ops = fake.ops()
    assert ops.index("cloudformation delete-stack") < ops.index("cloudformation create-stack")


def test_stack_in_a_failed_state_is_not_touched(fake):
    result = deploy_stack(
        fake,
        {
            "cloudformation describe-stacks": stack("UPDATE_ROLLBACK_FAILED"),
            "cloudformation describe-stack-events": EVENTS,
        },
    )
    assert result.returncode != 0
    assert "UPDATE_ROLLBACK_FAILED" in result.stderr
    assert "EVENT-MARKER" in result.stderr
    assert not {"cloudformation update-stack", "cloudformation create-stack"} & set(fake.ops())


def test_wait_is_bounded(fake):
    result = deploy_stack(
        fake,
        {
            "cloudformation describe-stacks": [MISSING, stack("CREATE_IN_PROGRESS")],
            "cloudformation create-stack": {"StackId": "id"},
            "cloudformation describe-stack-events": EVENTS,
        },
        STACK_TIMEOUT_SECONDS="1",
    )
    assert result.returncode != 0
    assert "still CREATE_IN_PROGRESS after 1s" in result.stderr
    assert "EVENT-MARKER" in result.stderr


def test_parameters_are_passed_as_a_file(fake):
    value = 'a "quoted" \\ value, with commas'
    driver = f'source "{SCRIPTS_DIR}/lib.sh"; write_parameters "$1" "Key=$2"; cat "$1"'
    out = fake.tmp / "params.json"
    result = fake.run({}, ["bash", "-c", driver, "driver", str(out), value], SCRIPTS_DIR)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"ParameterKey": "Key", "ParameterValue": value}]


# ---------------------------------------------------------------- whole scripts


def happy_deploy_scenario(migration_exit: int = 0) -> dict:
    exports = [
        [f"{ENV}-{name}", value]
        for name, value in {
            "VPC": "vpc-1",
            "VpcCidr": "10.0.0.0/16",
            "PublicSubnet1": "subnet-p1",
            "PublicSubnet2": "subnet-p2",
            "PrivateSubnet1": "subnet-a",
            "PrivateSubnet2": "subnet-b",
            "DatabaseSecurityGroup": "sg-db",
            "DatabaseEndpoint": "db.example",
            "DatabasePort": "5432",
            "DatabaseName": "medrobotics",
            "RawDataBucket": "raw",
        }.items()
    ]
    complete = stack(
        "CREATE_COMPLETE",
        {
            "ClusterName": f"{ENV}-cluster",
            "MigrationTaskDefinitionArn": "arn:aws:ecs:us-east-1:1:task-definition/m:1",
            "MigrationSecurityGroupId": "sg-m",
            "DataIngestionTaskDefinitionArn": "arn:aws:ecs:us-east-1:1:task-definition/d:1",
            "ApiServiceTaskDefinitionArn": "arn:aws:ecs:us-east-1:1:task-definition/a:1",
            "LoadBalancerURL": "http://alb.example",
            "TransportSecurity": "WARNING plain HTTP",
        },
    )
    secret_arn = "arn:aws:secretsmanager:us-east-1:1:secret:medrobotics/rds-credentials-x"
    return {
        "cloudformation list-exports": {"Exports": []}
        if exports is None
        else {"Exports": [{"Name": n, "Value": v} for n, v in exports]},
        "cloudformation describe-stacks": complete,
        "cloudformation update-stack": {
            "__error__": "(ValidationError) No updates are to be performed."
        },
        "secretsmanager describe-secret": {"ARN": secret_arn, "DeletedDate": None},
        "secretsmanager put-secret-value": {"ARN": secret_arn},
        "ecr describe-images": {"imageDetails": [{"imageTags": ["abc123"]}]},
        "ecs run-task": {"tasks": [{"taskArn": "arn:task/1"}]},
        "ecs describe-tasks": {
            "tasks": [
                {
                    "lastStatus": "STOPPED",
                    "stoppedReason": "Essential container in task exited",
                    "containers": [{"name": "migrate", "exitCode": migration_exit}],
                }
            ]
        },
    }


def test_deploy_runs_migration_before_services_and_keeps_the_password_off_argv(fake):
    result = fake.run(
        happy_deploy_scenario(),
        ["./deploy-ecs.sh"],
        SCRIPTS_DIR,
        RDS_PASSWORD='pa"ss',
    )
    assert result.returncode == 0, result.stderr
    calls = fake.calls()
    assert not any('pa"ss' in arg for call in calls for arg in call)
    assert json.loads(Path(f"{fake.log}.secrets").read_text()) == {
        "username": "medrobotics",
        "password": 'pa"ss',
    }
    stacks_updated = [c[c.index("--stack-name") + 1] for c in calls if "update-stack" in c]
    assert stacks_updated == [
        f"{ENV}-{s}" for s in ("ecs-cluster", "alb", "ecs-tasks", "ecs-services")
    ]
    ops = fake.ops()
    run_task = ops.index("ecs run-task")
    services_update = max(i for i, c in enumerate(calls) if "update-stack" in c)
    assert run_task < services_update
    (run,) = [c for c in calls if "run-task" in c]
    assert "capacityProvider=FARGATE,weight=1" in run
    assert "assignPublicIp=DISABLED" in " ".join(run)


def test_deploy_stops_when_the_migration_fails(fake):
    result = fake.run(
        happy_deploy_scenario(migration_exit=3), ["./deploy-ecs.sh"], SCRIPTS_DIR, RDS_PASSWORD="x"
    )
    assert result.returncode != 0
    assert "migration failed (exit code 3" in result.stderr
    updated = [c[c.index("--stack-name") + 1] for c in fake.calls() if "update-stack" in c]
    assert f"{ENV}-ecs-services" not in updated


def test_deploy_reports_missing_exports(fake):
    scenario = happy_deploy_scenario()
    scenario["cloudformation list-exports"] = {"Exports": []}
    result = fake.run(scenario, ["./deploy-ecs.sh"], SCRIPTS_DIR, RDS_PASSWORD="x")
    assert result.returncode != 0
    assert f"missing exports: {ENV}-VPC" in result.stderr
    assert "DEPLOY_FOUNDATION=true" in result.stderr


def test_deploy_requires_the_password_without_a_foundation_secret(fake):
    result = fake.run(happy_deploy_scenario(), ["./deploy-ecs.sh"], SCRIPTS_DIR)
    assert result.returncode != 0
    assert "RDS_PASSWORD must be set" in result.stderr


def test_scripts_require_their_environment(fake):
    for script in ("build-and-push.sh", "deploy-ecs.sh", "verify-deployment.sh"):
        result = fake.run({}, [f"./{script}"], SCRIPTS_DIR, ENVIRONMENT_NAME="")
        assert result.returncode != 0
        assert "ENVIRONMENT_NAME must be set" in result.stderr
        assert fake.calls() == []


def test_cleanup_with_nothing_deployed_succeeds_without_deleting(fake):
    scenario = {
        "cloudformation describe-stacks": MISSING,
        "ecr describe-repositories": {"__error__": "RepositoryNotFoundException"},
        "secretsmanager describe-secret": {"__error__": "ResourceNotFoundException"},
        "logs describe-log-groups": {"logGroups": []},
    }
    result = fake.run(scenario, ["./cleanup.sh", "--yes"], SCRIPTS_DIR)
    assert result.returncode == 0, result.stderr
    assert not [op for op in fake.ops() if op.split()[1].startswith("delete")]


def test_cleanup_fails_when_a_stack_cannot_be_deleted(fake):
    scenario = {
        "cloudformation describe-stacks": [
            stack("CREATE_COMPLETE"),
            stack("DELETE_IN_PROGRESS"),
            stack("DELETE_FAILED"),
        ],
        "cloudformation delete-stack": {},
        "cloudformation describe-stack-events": EVENTS,
    }
    result = fake.run(scenario, ["./cleanup.sh", "--yes"], SCRIPTS_DIR)
    assert result.returncode != 0
    assert "DELETE_FAILED" in result.stderr
    assert "EVENT-MARKER" in result.stderr


def test_scripts_work_from_the_repository_root(fake, tmp_path):
    root = make_sandbox(tmp_path / "repo")
    scenario = {"cloudformation describe-stacks": MISSING}
    result = fake.run(scenario, ["scripts/cleanup.sh"], root)
    assert result.returncode == 1
    assert "run again with --yes" in result.stderr


def test_verify_checks_health_routing_and_services(fake, tmp_path):
    find_tool("curl")
    server = subprocess.Popen(
        [sys.executable, str(HERE / "fakeaws" / "fake_alb.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = server.stdout.readline().strip()
        scenario = {
            "cloudformation describe-stacks": stack(
                "CREATE_COMPLETE", {"LoadBalancerURL": f"http://127.0.0.1:{port}"}
            ),
            "ecs describe-services": {
                "services": [
                    {
                        "status": "ACTIVE",
                        "desiredCount": 1,
                        "runningCount": 1,
                        "deployments": [{"status": "PRIMARY", "rolloutState": "COMPLETED"}],
                    }
                ]
            },
        }
        good = fake.run(scenario, ["./verify-deployment.sh"], SCRIPTS_DIR)
        assert good.returncode == 0, good.stderr
        assert "all checks passed" in good.stderr

        scenario["ecs describe-services"]["services"][0]["runningCount"] = 0
        bad = fake.run(
            scenario, ["./verify-deployment.sh"], SCRIPTS_DIR, VERIFY_TIMEOUT_SECONDS="1"
        )
        assert bad.returncode != 0
        assert "FAIL service" in bad.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)
