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
        for suffix in ("", ".state", ".secrets", ".params"):
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

    def parameters(self, stack_name: str) -> dict[str, str]:
        """The parameters the last create or update of a stack was given."""
        found = {}
        for line in Path(f"{self.log}.params").read_text().splitlines():
            entry = json.loads(line)
            if entry["stack"] == stack_name:
                found = {p["ParameterKey"]: p["ParameterValue"] for p in entry["parameters"]}
        return found

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
            "ArchiverTaskDefinitionArn": "arn:aws:ecs:us-east-1:1:task-definition/r:1",
            "WorkGroupName": f"{ENV}-lake",
            "LakeDatabaseName": "medrobotics_medrobotics_lake",
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
        "iam get-role": {"Role": {"RoleName": "AWSServiceRoleForECS"}},
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
        f"{ENV}-{s}" for s in ("ecs-cluster", "alb", "ecs-tasks", "ecs-services", "lake-catalog")
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
        "cloudformation list-exports": {"Exports": []},
        "ecs list-task-definitions": {"taskDefinitionArns": []},
        "ecr describe-repositories": {"__error__": "RepositoryNotFoundException"},
        "secretsmanager describe-secret": {"__error__": "ResourceNotFoundException"},
        "logs describe-log-groups": {"logGroups": []},
    }
    result = fake.run(scenario, ["./cleanup.sh", "--yes"], SCRIPTS_DIR)
    assert result.returncode == 0, result.stderr
    assert not [op for op in fake.ops() if op.split()[1].startswith("delete")]


def test_cleanup_fails_when_a_stack_cannot_be_deleted(fake):
    scenario = {
        "cloudformation list-exports": {"Exports": []},
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


# ---------------------------------------------------------------- lifecycle traps

FOUNDATION_SECRET = "arn:aws:secretsmanager:us-east-1:1:secret:medrobotics/rds-credentials-F0"
BOOTSTRAP_SECRET = "arn:aws:secretsmanager:us-east-1:1:secret:medrobotics/bootstrap-key-B0"
FOUNDATION_HASH_KEY = (
    "arn:aws:secretsmanager:us-east-1:1:secret:medrobotics/medrobotics/lake-hash-key-H0"
)
HASH_KEY_NAME = f"{ENV}/medrobotics/lake-hash-key"


def secret(arn: str, tags: dict[str, str], deleted: str | None = None) -> dict:
    return {
        "ARN": arn,
        "DeletedDate": deleted,
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }


def cleanup_scenario(**secrets: dict) -> dict:
    return {
        "cloudformation describe-stacks": MISSING,
        "cloudformation list-exports": {
            "Exports": [{"Name": f"{ENV}-DatabaseSecretArn", "Value": FOUNDATION_SECRET}]
        },
        "ecs list-task-definitions": {"taskDefinitionArns": []},
        "ecr describe-repositories": {"__error__": "RepositoryNotFoundException"},
        "logs describe-log-groups": {"logGroups": []},
        "secretsmanager delete-secret": {},
        **{
            f"secretsmanager describe-secret {ENV}/{name}": value for name, value in secrets.items()
        },
    }


def deleted_secrets(fake: FakeAws) -> list[str]:
    return [c[c.index("--secret-id") + 1] for c in fake.calls() if "delete-secret" in c]


def test_cleanup_keeps_the_foundations_database_secret(fake):
    # The foundation stack made <env>/rds-credentials: CloudFormation's tags, and exported.
    scenario = cleanup_scenario(
        **{
            "rds-credentials": secret(
                FOUNDATION_SECRET,
                {
                    "Environment": ENV,
                    "aws:cloudformation:stack-name": f"{ENV}-foundation",
                },
            ),
            "bootstrap-key": secret(
                BOOTSTRAP_SECRET, {"Environment": ENV, "CreatedBy": "deploy-ecs.sh"}
            ),
        }
    )
    result = fake.run(scenario, ["./cleanup.sh", "--yes"], SCRIPTS_DIR)
    assert result.returncode == 0, result.stderr
    assert deleted_secrets(fake) == [BOOTSTRAP_SECRET]
    assert f"keeping secret {ENV}/rds-credentials: it belongs to the stack {ENV}-foundation" in (
        result.stderr
    )


def test_cleanup_keeps_an_exported_database_secret_it_did_not_create(fake):
    # An earlier phase's secret of the same name, exported for the tasks, no CloudFormation tags.
    scenario = cleanup_scenario(
        **{
            "rds-credentials": secret(FOUNDATION_SECRET, {"Environment": ENV}),
            "bootstrap-key": {"__error__": "ResourceNotFoundException"},
        }
    )
    result = fake.run(scenario, ["./cleanup.sh", "--yes"], SCRIPTS_DIR)
    assert result.returncode == 0, result.stderr
    assert deleted_secrets(fake) == []
    assert "DatabaseSecretArn exports" in result.stderr


def test_cleanup_deletes_the_secret_deploy_created(fake):
    own = "arn:aws:secretsmanager:us-east-1:1:secret:medrobotics/rds-credentials-D0"
    scenario = cleanup_scenario(
        **{
            "rds-credentials": secret(own, {"Environment": ENV, "CreatedBy": "deploy-ecs.sh"}),
            "bootstrap-key": secret(BOOTSTRAP_SECRET, {"Owner": "someone-else"}),
        }
    )
    result = fake.run(scenario, ["./cleanup.sh", "--yes"], SCRIPTS_DIR)
    assert result.returncode == 0, result.stderr
    assert deleted_secrets(fake) == [own]
    assert f"keeping secret {ENV}/bootstrap-key: deploy-ecs.sh did not create it" in result.stderr
    (call,) = [c for c in fake.calls() if "delete-secret" in c]
    assert call[call.index("--recovery-window-in-days") + 1] == "7"


def test_cleanup_deregisters_the_retained_task_definitions_of_its_families_only(fake):
    arn = "arn:aws:ecs:us-east-1:1:task-definition/{}:{}"
    scenario = cleanup_scenario()
    scenario["secretsmanager describe-secret"] = {"__error__": "ResourceNotFoundException"}
    scenario["ecs list-task-definitions"] = [
        {"taskDefinitionArns": [arn.format(f"{ENV}-data-ingestion", n) for n in (1, 2)]},
        {"taskDefinitionArns": [arn.format(f"{ENV}-api-service", 4)]},
        {"taskDefinitionArns": [arn.format(f"{ENV}-archiver", 3)]},
        # a longer family that only shares the prefix stays
        {"taskDefinitionArns": [arn.format(f"{ENV}-migrate-other", 1)]},
    ]
    scenario["ecs deregister-task-definition"] = {}
    result = fake.run(scenario, ["./cleanup.sh", "--yes"], SCRIPTS_DIR)
    assert result.returncode == 0, result.stderr
    deregistered = [
        c[c.index("--task-definition") + 1]
        for c in fake.calls()
        if "deregister-task-definition" in c
    ]
    assert deregistered == [
        arn.format(f"{ENV}-data-ingestion", 1),
        arn.format(f"{ENV}-data-ingestion", 2),
        arn.format(f"{ENV}-api-service", 4),
        arn.format(f"{ENV}-archiver", 3),
    ]


def foundation_deploy_scenario(deleted: str | None) -> dict:
    scenario = happy_deploy_scenario()
    scenario["cloudformation list-exports"]["Exports"] += [
        {"Name": f"{ENV}-DatabaseSecretArn", "Value": FOUNDATION_SECRET},
        {"Name": f"{ENV}-LakeHashKeySecretArn", "Value": FOUNDATION_HASH_KEY},
    ]
    scenario["secretsmanager describe-secret"] = secret(
        FOUNDATION_SECRET, {"aws:cloudformation:stack-name": f"{ENV}-foundation"}, deleted
    )
    scenario[f"secretsmanager describe-secret {FOUNDATION_HASH_KEY}"] = secret(
        FOUNDATION_HASH_KEY, {"aws:cloudformation:stack-name": f"{ENV}-foundation"}
    )
    scenario["secretsmanager restore-secret"] = {"ARN": FOUNDATION_SECRET}
    return scenario


def test_deploy_restores_the_foundations_secret_scheduled_for_deletion(fake):
    result = fake.run(
        foundation_deploy_scenario("2026-01-01T00:00:00Z"), ["./deploy-ecs.sh"], SCRIPTS_DIR
    )
    assert result.returncode == 0, result.stderr
    calls = fake.calls()
    (restore,) = [c for c in calls if "restore-secret" in c]
    assert restore[restore.index("--secret-id") + 1] == FOUNDATION_SECRET
    tasks_update = next(
        i for i, c in enumerate(calls) if "update-stack" in c and f"{ENV}-ecs-tasks" in c
    )
    assert calls.index(restore) < tasks_update, "restored before any task may start"
    assert not [c for c in calls if "put-secret-value" in c], "the foundation's value is kept"


def test_deploy_leaves_a_live_foundation_secret_alone(fake):
    result = fake.run(foundation_deploy_scenario(None), ["./deploy-ecs.sh"], SCRIPTS_DIR)
    assert result.returncode == 0, result.stderr
    assert "secretsmanager restore-secret" not in fake.ops()


def test_deploy_creates_the_ecs_service_linked_role_when_missing(fake):
    scenario = happy_deploy_scenario()
    scenario["iam get-role"] = {"__error__": "(NoSuchEntity) The role AWSServiceRoleForECS"}
    scenario["iam create-service-linked-role"] = {"Role": {"RoleName": "AWSServiceRoleForECS"}}
    result = fake.run(scenario, ["./deploy-ecs.sh"], SCRIPTS_DIR, RDS_PASSWORD="x")
    assert result.returncode == 0, result.stderr
    calls = fake.calls()
    (create,) = [c for c in calls if "create-service-linked-role" in c]
    assert create[create.index("--aws-service-name") + 1] == "ecs.amazonaws.com"
    first_stack_write = next(i for i, c in enumerate(calls) if "update-stack" in c)
    assert calls.index(create) < first_stack_write


def test_deploy_does_not_create_the_service_linked_role_twice(fake):
    result = fake.run(happy_deploy_scenario(), ["./deploy-ecs.sh"], SCRIPTS_DIR, RDS_PASSWORD="x")
    assert result.returncode == 0, result.stderr
    assert "iam create-service-linked-role" not in fake.ops()
    # Made meanwhile by someone else: the error says so, and that is what was wanted.
    scenario = happy_deploy_scenario()
    scenario["iam get-role"] = {"__error__": "(NoSuchEntity) no such role"}
    scenario["iam create-service-linked-role"] = {
        "__error__": "(InvalidInput) Service role name AWSServiceRoleForECS has been taken "
        "in this account, please try a different suffix."
    }
    raced = fake.run(scenario, ["./deploy-ecs.sh"], SCRIPTS_DIR, RDS_PASSWORD="x")
    assert raced.returncode == 0, raced.stderr
    # Any other refusal stops the deployment before a stack is touched.
    scenario["iam create-service-linked-role"] = {"__error__": "(AccessDenied) not allowed"}
    denied = fake.run(scenario, ["./deploy-ecs.sh"], SCRIPTS_DIR, RDS_PASSWORD="x")
    assert denied.returncode != 0
    assert "cannot create the ECS service-linked role" in denied.stderr
    assert not [c for c in fake.calls() if "update-stack" in c or "create-stack" in c]


def services_rollback_scenario() -> dict:
    scenario = happy_deploy_scenario()
    services = f"{ENV}-ecs-services"
    rolled_back = stack("UPDATE_ROLLBACK_COMPLETE")
    revision = "arn:aws:ecs:us-east-1:1:task-definition/medrobotics-{}:7"
    rolled_back["Stacks"][0]["Parameters"] = [
        {
            "ParameterKey": "DataIngestionTaskDefinitionArn",
            "ParameterValue": revision.format("data-ingestion"),
        },
        {
            "ParameterKey": "ApiServiceTaskDefinitionArn",
            "ParameterValue": revision.format("api-service"),
        },
        {"ParameterKey": "EnvironmentName", "ParameterValue": ENV},
    ]
    scenario[f"cloudformation describe-stacks {services}"] = [
        stack("UPDATE_COMPLETE"),
        stack("UPDATE_IN_PROGRESS"),
        stack("UPDATE_ROLLBACK_IN_PROGRESS"),
        rolled_back,
    ]
    scenario[f"cloudformation update-stack {services}"] = {"StackId": "id"}
    scenario["cloudformation describe-stack-events"] = EVENTS
    scenario["ecs describe-task-definition"] = {"taskDefinition": {"status": "ACTIVE"}}
    return scenario


def test_failed_services_update_rolls_back_to_active_revisions(fake):
    result = fake.run(
        services_rollback_scenario(), ["./deploy-ecs.sh"], SCRIPTS_DIR, RDS_PASSWORD="x"
    )
    assert result.returncode != 0
    assert f"stack {ENV}-ecs-services ended in UPDATE_ROLLBACK_COMPLETE" in result.stderr
    # the services are back on the revisions they ran, which the tasks stack kept ACTIVE
    assert "medrobotics-data-ingestion:7 (ACTIVE)" in result.stderr
    assert "medrobotics-api-service:7 (ACTIVE)" in result.stderr
    assert "the services were not moved to abc123" in result.stderr

    # UPDATE_ROLLBACK_COMPLETE is a settled state: the next deploy goes ahead.
    again = services_rollback_scenario()
    again[f"cloudformation describe-stacks {ENV}-ecs-services"] = [
        stack("UPDATE_ROLLBACK_COMPLETE"),
        stack("UPDATE_IN_PROGRESS"),
        stack("UPDATE_COMPLETE"),
    ]
    second = fake.run(again, ["./deploy-ecs.sh"], SCRIPTS_DIR, RDS_PASSWORD="x")
    assert second.returncode == 0, second.stderr
    assert f"stack {ENV}-ecs-services: UPDATE_COMPLETE" in second.stderr


def test_deploy_with_a_domain_serves_https_on_it(fake):
    result = fake.run(
        happy_deploy_scenario(),
        ["./deploy-ecs.sh"],
        SCRIPTS_DIR,
        RDS_PASSWORD="x",
        DOMAIN_NAME="fleet.example.org",
        HOSTED_ZONE_ID="Z0123456789ABC",
    )
    assert result.returncode == 0, result.stderr
    assert "HTTPS on https://fleet.example.org" in result.stderr
    assert "PLAIN HTTP" not in result.stderr
    parameters = fake.parameters(f"{ENV}-alb")
    assert parameters["DomainName"] == "fleet.example.org"
    assert parameters["HostedZoneId"] == "Z0123456789ABC"
    assert parameters["CertificateArn"] == ""


def test_deploy_without_a_domain_warns_of_plain_http(fake):
    result = fake.run(happy_deploy_scenario(), ["./deploy-ecs.sh"], SCRIPTS_DIR, RDS_PASSWORD="x")
    assert result.returncode == 0, result.stderr
    assert "WARNING: DOMAIN_NAME is not set: the load balancer serves PLAIN HTTP." in result.stderr
    assert "trial" in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DOMAIN_NAME": "fleet.example.org"}, "DOMAIN_NAME needs HOSTED_ZONE_ID"),
        (
            {"CERTIFICATE_ARN": "arn:aws:acm:us-east-1:123456789012:certificate/abc"},
            "CERTIFICATE_ARN needs DOMAIN_NAME",
        ),
    ],
)
def test_deploy_refuses_https_without_a_name_it_can_carry(fake, env, message):
    result = fake.run(
        happy_deploy_scenario(), ["./deploy-ecs.sh"], SCRIPTS_DIR, RDS_PASSWORD="x", **env
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "cloudformation update-stack" not in [
        op for op, c in zip(fake.ops(), fake.calls(), strict=True) if f"{ENV}-alb" in c
    ]


def test_stacks_are_deployed_with_the_cloudformation_role_when_given(fake):
    role = "arn:aws:iam::123456789012:role/medrobotics-cfn"
    result = fake.run(
        happy_deploy_scenario(),
        ["./deploy-ecs.sh"],
        SCRIPTS_DIR,
        RDS_PASSWORD="x",
        CLOUDFORMATION_ROLE_ARN=role,
    )
    assert result.returncode == 0, result.stderr
    updates = [c for c in fake.calls() if "update-stack" in c]
    assert len(updates) == 5
    assert all(c[c.index("--role-arn") + 1] == role for c in updates)
    plain = fake.run(happy_deploy_scenario(), ["./deploy-ecs.sh"], SCRIPTS_DIR, RDS_PASSWORD="x")
    assert plain.returncode == 0, plain.stderr
    assert not any("--role-arn" in c for c in fake.calls())


def self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    """A certificate for `name` and its key, as PEM files (the certificate is its own CA)."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def verify_scenario(url: str) -> dict:
    return {
        "cloudformation describe-stacks": stack("CREATE_COMPLETE", {"LoadBalancerURL": url}),
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


@pytest.mark.parametrize(("cert_name", "passes"), [("localhost", True), ("fleet.example", False)])
def test_verify_passes_over_https_only_when_the_certificate_carries_the_name(
    fake, tmp_path, cert_name, passes
):
    find_tool("curl")
    cert, key = self_signed(tmp_path, cert_name)
    server = subprocess.Popen(
        [sys.executable, str(HERE / "fakeaws" / "fake_alb.py"), "--tls", str(cert), str(key)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        tls_port = server.stdout.readline().strip()
        http_port = server.stdout.readline().strip()
        result = fake.run(
            verify_scenario(f"https://localhost:{tls_port}"),
            ["./verify-deployment.sh"],
            SCRIPTS_DIR,
            CURL_CA_BUNDLE=str(cert),  # the stand-in certificate is trusted; its name is checked
            VERIFY_HTTP_URL=f"http://127.0.0.1:{http_port}",
            VERIFY_TIMEOUT_SECONDS="1",
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    if passes:
        assert result.returncode == 0, result.stderr
        assert "answers 301 to HTTPS" in result.stderr
        assert f"ok   https://localhost:{tls_port}/api/health -> 200" in result.stderr
        assert "PLAIN HTTP" not in result.stderr
    else:
        assert result.returncode != 0
        assert f"FAIL https://localhost:{tls_port}/api/health -> 000" in result.stderr


def test_verify_refuses_https_on_the_load_balancers_own_name(fake):
    url = "https://medrobotics-alb-123.us-east-1.elb.amazonaws.com"
    result = fake.run(verify_scenario(url), ["./verify-deployment.sh"], SCRIPTS_DIR)
    assert result.returncode != 0
    assert "no certificate carries; deploy with DOMAIN_NAME" in result.stderr
    assert "ecs describe-services" not in fake.ops()


def test_verify_warns_of_plain_http(fake, tmp_path):
    find_tool("curl")
    server = subprocess.Popen(
        [sys.executable, str(HERE / "fakeaws" / "fake_alb.py")], stdout=subprocess.PIPE, text=True
    )
    try:
        port = server.stdout.readline().strip()
        result = fake.run(
            verify_scenario(f"http://127.0.0.1:{port}"), ["./verify-deployment.sh"], SCRIPTS_DIR
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert result.returncode == 0, result.stderr
    assert "the load balancer serves PLAIN HTTP (no domain): a trial deployment" in result.stderr


# ---------------------------------------------------------------- the lake hash key


def test_deploy_generates_the_lake_hash_key_once_off_argv(fake):
    created = "arn:aws:secretsmanager:us-east-1:1:secret:medrobotics/medrobotics/lake-hash-key-N0"
    scenario = happy_deploy_scenario()
    scenario[f"secretsmanager describe-secret {HASH_KEY_NAME}"] = {
        "__error__": "(ResourceNotFoundException) Secrets Manager can't find the secret"
    }
    scenario["secretsmanager create-secret"] = {"ARN": created}
    result = fake.run(scenario, ["./deploy-ecs.sh"], SCRIPTS_DIR, RDS_PASSWORD="x")
    assert result.returncode == 0, result.stderr
    (create,) = [c for c in fake.calls() if "create-secret" in c]
    assert create[create.index("--name") + 1] == HASH_KEY_NAME
    assert create[create.index("--secret-string") + 1].startswith("file://")
    assert "Key=CreatedBy,Value=deploy-ecs.sh" in create, "cleanup.sh may delete only its own"
    payloads = Path(f"{fake.log}.secrets").read_text().splitlines()
    key = payloads[-1]
    assert len(key) == 64 and int(key, 16) >= 0, "256 random bits as hex"
    assert not any(key in arg for call in fake.calls() for arg in call)
    assert fake.parameters(f"{ENV}-ecs-tasks")["LakeHashKeySecretArn"] == created


def test_deploy_never_replaces_an_existing_lake_hash_key(fake):
    existing = "arn:aws:secretsmanager:us-east-1:1:secret:medrobotics/medrobotics/lake-hash-key-E0"
    scenario = happy_deploy_scenario()
    scenario[f"secretsmanager describe-secret {HASH_KEY_NAME}"] = secret(
        existing, {"CreatedBy": "deploy-ecs.sh"}
    )
    result = fake.run(scenario, ["./deploy-ecs.sh"], SCRIPTS_DIR, RDS_PASSWORD="x")
    assert result.returncode == 0, result.stderr
    writes = [c for c in fake.calls() if {"put-secret-value", "create-secret"} & set(c)]
    assert all(HASH_KEY_NAME not in c and existing not in c for c in writes), writes
    assert fake.parameters(f"{ENV}-ecs-tasks")["LakeHashKeySecretArn"] == existing


def test_deploy_uses_the_foundations_lake_hash_key(fake):
    result = fake.run(foundation_deploy_scenario(None), ["./deploy-ecs.sh"], SCRIPTS_DIR)
    assert result.returncode == 0, result.stderr
    assert "lake hash key: secret exported by the foundation stack" in result.stderr
    assert fake.parameters(f"{ENV}-ecs-tasks")["LakeHashKeySecretArn"] == FOUNDATION_HASH_KEY
    assert not [c for c in fake.calls() if "create-secret" in c]


def test_deploy_hands_the_archiver_revision_to_the_services_and_deploys_the_catalog(fake):
    result = fake.run(happy_deploy_scenario(), ["./deploy-ecs.sh"], SCRIPTS_DIR, RDS_PASSWORD="x")
    assert result.returncode == 0, result.stderr
    services = fake.parameters(f"{ENV}-ecs-services")
    assert services["ArchiverTaskDefinitionArn"] == "arn:aws:ecs:us-east-1:1:task-definition/r:1"
    catalog = fake.parameters(f"{ENV}-lake-catalog")
    assert catalog["BytesScannedCutoffPerQuery"] == str(10 * 1024**3)
    assert catalog["CreateAnalystPolicy"] == "true"
    assert f"Athena workgroup {ENV}-lake, database medrobotics_medrobotics_lake" in result.stderr


def test_cleanup_keeps_the_foundations_hash_key_and_deletes_its_own(fake):
    scenario = cleanup_scenario(
        **{
            "rds-credentials": {"__error__": "ResourceNotFoundException"},
            "bootstrap-key": {"__error__": "ResourceNotFoundException"},
            "medrobotics/lake-hash-key": secret(
                FOUNDATION_HASH_KEY, {"aws:cloudformation:stack-name": f"{ENV}-foundation"}
            ),
        }
    )
    result = fake.run(scenario, ["./cleanup.sh", "--yes"], SCRIPTS_DIR)
    assert result.returncode == 0, result.stderr
    assert deleted_secrets(fake) == []
    assert f"keeping secret {HASH_KEY_NAME}: it belongs to the stack" in result.stderr

    own = "arn:aws:secretsmanager:us-east-1:1:secret:medrobotics/medrobotics/lake-hash-key-D0"
    scenario[f"secretsmanager describe-secret {HASH_KEY_NAME}"] = secret(
        own, {"Environment": ENV, "CreatedBy": "deploy-ecs.sh"}
    )
    result = fake.run(scenario, ["./cleanup.sh", "--yes"], SCRIPTS_DIR)
    assert result.returncode == 0, result.stderr
    assert deleted_secrets(fake) == [own], "recoverable for 7 days; deploy restores it"


def test_cleanup_empties_the_query_results_then_deletes_the_catalog_first(fake):
    scenario = cleanup_scenario()
    scenario["secretsmanager describe-secret"] = {"__error__": "ResourceNotFoundException"}
    deleted = {"__error__": "(ValidationError) Stack with id x does not exist"}
    scenario[f"cloudformation describe-stacks {ENV}-lake-catalog"] = [
        stack("CREATE_COMPLETE", {"QueryResultsBucketName": "results-bucket"}),
        stack("CREATE_COMPLETE", {"QueryResultsBucketName": "results-bucket"}),
        stack("CREATE_COMPLETE", {"QueryResultsBucketName": "results-bucket"}),
        deleted,
    ]
    scenario["cloudformation delete-stack"] = {}
    scenario["s3 rm"] = ""
    result = fake.run(scenario, ["./cleanup.sh", "--yes"], SCRIPTS_DIR)
    assert result.returncode == 0, result.stderr
    ops = fake.ops()
    (rm,) = [c for c in fake.calls() if "rm" in c]
    assert "s3://results-bucket" in rm and "--recursive" in rm
    assert ops.index("s3 rm") < ops.index("cloudformation delete-stack")
    (delete,) = [c for c in fake.calls() if "delete-stack" in c]
    assert delete[delete.index("--stack-name") + 1] == f"{ENV}-lake-catalog"
