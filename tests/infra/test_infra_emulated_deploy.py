"""The real scripts deploy the real templates to moto; then the guide's commands run.

Moto keeps stacks, exports, load balancers, listeners, rules, target groups,
ECS clusters, services, task definitions, log groups, dashboards, ECR,
Secrets Manager, S3 buckets and IAM managed policies faithfully enough to
assert on. It silently skips auto scaling, alarms, WAF, bucket policies,
CloudFormation-managed secrets and the Glue database and tables and the
Athena workgroup (its CloudFormation has no model for them), and ignores a
service's capacity-provider strategy and load balancers and the load
balancer's attributes and a log group's KMS key: the template tests check
those (the Glue and Athena definitions against the services' API models).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from infra_support import HERE, VENDOR, VENV_BIN, find_tool, git_short_sha, make_sandbox

ENV = "medrobotics"
REGION = "us-east-1"
# Quotes and backslashes must survive the trip into the secret's JSON.
PASSWORD = 'S3cure"pass\\word'
HASH_KEY = f"{ENV}/medrobotics/lake-hash-key"


class Deployment:
    def __init__(self, root: Path, env: dict[str, str]):
        self.root = root
        self.env = env

    def run(self, *argv: str, extra: dict[str, str] | None = None, timeout: int = 240):
        env = {**self.env, **(extra or {})}
        return subprocess.run(
            list(argv), cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout
        )

    def script(self, name: str, *args: str, extra: dict[str, str] | None = None):
        # Run from scripts/, as the guide does.
        result = subprocess.run(
            [f"./{name}", *args],
            cwd=self.root / "scripts",
            env={**self.env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=240,
        )
        return result

    def aws(self, *args: str) -> dict | list | str:
        result = self.run("aws", *args, "--output", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def deployment(moto_endpoint, tmp_path_factory):
    find_tool("aws")
    find_tool("git")
    root = make_sandbox(tmp_path_factory.mktemp("checkout") / "repo")
    docker_log = root.parent / "docker.log"
    path = os.pathsep.join(
        [str(HERE / "bin"), str(VENV_BIN), os.environ.get("PATH", "/usr/bin:/bin")]
    )
    env = {
        "PATH": path,
        "HOME": str(root.parent),
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "ENVIRONMENT_NAME": ENV,
        "FAKE_DOCKER_LOG": str(docker_log),
        "POLL_SECONDS": "1",
        "STACK_TIMEOUT_SECONDS": "120",
        "TASK_TIMEOUT_SECONDS": "60",
    }
    dep = Deployment(root, env)
    build = dep.script("build-and-push.sh")
    assert build.returncode == 0, build.stderr
    dep.tag = build.stdout.strip().splitlines()[-1]
    dep.build_log = build.stderr
    dep.docker_log = docker_log
    dep.docker_calls = docker_log.read_text().splitlines()
    deploy = dep.script(
        "deploy-ecs.sh", extra={"DEPLOY_FOUNDATION": "true", "RDS_PASSWORD": PASSWORD}
    )
    assert deploy.returncode == 0, deploy.stderr
    dep.deploy_log = deploy.stderr
    outputs = dep.aws("cloudformation", "describe-stacks", "--stack-name", f"{ENV}-lake-catalog")
    dep.results_bucket = {
        o["OutputKey"]: o["OutputValue"] for o in outputs["Stacks"][0]["Outputs"]
    }["QueryResultsBucketName"]
    return dep


def test_images_are_tagged_with_the_commit_only_and_tags_are_immutable(deployment):
    assert deployment.tag == git_short_sha(deployment.root)
    revision = deployment.run("git", "rev-parse", "HEAD").stdout.strip()
    for service in ("data-ingestion", "api-service"):
        images = deployment.aws("ecr", "describe-images", "--repository-name", f"{ENV}-{service}")
        tags = {t for image in images["imageDetails"] for t in image.get("imageTags", [])}
        assert tags == {deployment.tag}, "one immutable tag per image, no moving latest"
        (repo,) = deployment.aws(
            "ecr", "describe-repositories", "--repository-names", f"{ENV}-{service}"
        )["repositories"]
        assert repo["imageTagMutability"] == "IMMUTABLE"
        build = next(c for c in deployment.docker_calls if c.startswith("build") and service in c)
        assert f"-f {deployment.root}/services/{service}/Dockerfile" in build
        assert build.endswith(f" {deployment.root}"), "the build context is the repository root"
        # the image labels revision, created and version are filled
        assert f"--build-arg REVISION={revision} " in build
        assert re.search(r"--build-arg CREATED=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", build)
        assert "--build-arg VERSION=9.8.7 " in build
        assert "BASE=" not in build, "real builds use the Dockerfiles' pinned digest"
    assert deployment.docker_calls[0].startswith("login --username AWS --password-stdin")
    # A fresh checkout has no browser libraries: they are fetched before the images are built.
    assert "fetching the browser libraries (make assets)" in deployment.build_log
    assert (deployment.root / VENDOR / ".installed").is_file()


def test_pushing_the_same_commit_again_builds_nothing(deployment):
    before = len(deployment.docker_log.read_text().splitlines())
    again = deployment.script("build-and-push.sh")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == deployment.tag
    calls = deployment.docker_log.read_text().splitlines()[before:]
    assert not [c for c in calls if c.startswith(("build", "push"))], calls
    assert "already in ECR (tags are immutable)" in again.stderr


def test_all_stacks_complete(deployment):
    stacks = deployment.aws("cloudformation", "describe-stacks")["Stacks"]
    status = {s["StackName"]: s["StackStatus"] for s in stacks}
    for suffix in ("foundation", "ecs-cluster", "alb", "ecs-tasks", "ecs-services", "lake-catalog"):
        assert status[f"{ENV}-{suffix}"] == "CREATE_COMPLETE"


def test_the_stacks_were_deployed_in_order(deployment):
    order = [
        line.split("creating stack ")[1].split()[0]
        for line in deployment.deploy_log.splitlines()
        if "creating stack " in line
    ]
    assert order == [
        f"{ENV}-{s}"
        for s in ("foundation", "ecs-cluster", "alb", "ecs-tasks", "ecs-services", "lake-catalog")
    ]
    log = deployment.deploy_log
    assert log.index("migration complete") < log.index(f"creating stack {ENV}-ecs-services")
    assert "PLAIN HTTP" in log


def test_guide_verify_command_returns_the_url(deployment):
    # Verbatim from the guide, with the environment name substituted.
    result = deployment.run(
        "aws",
        "cloudformation",
        "describe-stacks",
        "--stack-name",
        f"{ENV}-alb",
        "--query",
        "Stacks[0].Outputs[?OutputKey==`LoadBalancerURL`].OutputValue",
        "--output",
        "text",
    )
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    lbs = deployment.aws("elbv2", "describe-load-balancers", "--names", f"{ENV}-alb")
    (lb,) = lbs["LoadBalancers"]
    assert url == f"http://{lb['DNSName']}"
    assert lb["Scheme"] == "internet-facing"
    outputs = deployment.aws("cloudformation", "describe-stacks", "--stack-name", f"{ENV}-alb")
    transport = {o["OutputKey"]: o["OutputValue"] for o in outputs["Stacks"][0]["Outputs"]}[
        "TransportSecurity"
    ]
    assert transport.startswith("WARNING")


def test_listener_rules_and_target_groups(deployment):
    (lb,) = deployment.aws("elbv2", "describe-load-balancers", "--names", f"{ENV}-alb")[
        "LoadBalancers"
    ]
    (listener,) = deployment.aws(
        "elbv2", "describe-listeners", "--load-balancer-arn", lb["LoadBalancerArn"]
    )["Listeners"]
    assert (listener["Protocol"], listener["Port"]) == ("HTTP", 80)
    (default,) = listener["DefaultActions"]
    assert default["Type"] == "fixed-response"
    assert default["FixedResponseConfig"]["StatusCode"] == "404"

    groups = {
        g["TargetGroupArn"]: g
        for g in deployment.aws("elbv2", "describe-target-groups")["TargetGroups"]
    }
    rules = deployment.aws("elbv2", "describe-rules", "--listener-arn", listener["ListenerArn"])
    routes = {}
    for rule in rules["Rules"]:
        if rule["IsDefault"]:
            continue
        (condition,) = rule["Conditions"]
        pattern = (condition.get("PathPatternConfig") or {}).get("Values") or condition["Values"]
        (action,) = rule["Actions"]
        group = groups[action["TargetGroupArn"]]
        routes[pattern[0]] = (group["TargetGroupName"], group["Port"])
    assert routes == {"/api/*": (f"{ENV}-api", 5000), "/ingest/*": (f"{ENV}-ingest", 8080)}
    for group in groups.values():
        assert group["HealthCheckPath"] == "/health"
        assert group["Matcher"]["HttpCode"] == "200"
        assert group["TargetType"] == "ip"


def test_guide_ecs_commands_find_the_services(deployment):
    for service in ("api-service", "data-ingestion"):
        described = deployment.aws(
            "ecs",
            "describe-services",
            "--cluster",
            f"{ENV}-cluster",
            "--services",
            f"{ENV}-{service}",
        )
        (svc,) = described["services"]
        assert svc["status"] == "ACTIVE"
        assert svc["taskDefinition"].split("/")[-1].startswith(f"{ENV}-{service}:")
    listed = deployment.run(
        "aws",
        "ecs",
        "list-tasks",
        "--cluster",
        f"{ENV}-cluster",
        "--service-name",
        f"{ENV}-api-service",
    )
    assert listed.returncode == 0, listed.stderr
    # The guide's troubleshooting command answers.
    stopped = deployment.run(
        "aws", "ecs", "list-tasks", "--cluster", f"{ENV}-cluster", "--desired-status", "STOPPED"
    )
    assert stopped.returncode == 0, stopped.stderr
    migrations = deployment.aws(
        "ecs", "list-tasks", "--cluster", f"{ENV}-cluster", "--started-by", "deploy-ecs-migrate"
    )["taskArns"]
    (task,) = deployment.aws(
        "ecs", "describe-tasks", "--cluster", f"{ENV}-cluster", "--tasks", *migrations
    )["tasks"]
    assert f"task-definition/{ENV}-migrate:" in task["taskDefinitionArn"]
    assert task["lastStatus"] == "STOPPED"


def test_task_definitions_run_the_pushed_tag_with_secrets_injected(deployment):
    secret = deployment.aws(
        "secretsmanager", "get-secret-value", "--secret-id", f"{ENV}/rds-credentials"
    )
    assert json.loads(secret["SecretString"]) == {"username": "medrobotics", "password": PASSWORD}
    for family, port in (("data-ingestion", 8080), ("api-service", 5000)):
        definition = deployment.aws(
            "ecs", "describe-task-definition", "--task-definition", f"{ENV}-{family}"
        )["taskDefinition"]
        (container,) = definition["containerDefinitions"]
        assert container["image"].endswith(f"/{ENV}-{family}:{deployment.tag}")
        assert container["user"] == "10001:10001"
        assert container["readonlyRootFilesystem"] is True
        assert container["stopTimeout"] == 30
        assert container["portMappings"][0]["containerPort"] == port
        env = {e["name"]: e["value"] for e in container["environment"]}
        assert PASSWORD not in json.dumps(definition)
        assert "RDS_PASSWORD" not in env and "RDS_SECRET" not in env
        assert env["ENVIRONMENT"] == "production"
        assert env["PORT"] == str(port)
        secrets = {s["name"]: s["valueFrom"] for s in container["secrets"] if s}
        assert secrets["RDS_SECRET"] == secret["ARN"]
        options = container["logConfiguration"]["options"]
        assert options["awslogs-group"] == f"/aws/ecs/{ENV}/{family}"
    migrate = deployment.aws(
        "ecs", "describe-task-definition", "--task-definition", f"{ENV}-migrate"
    )["taskDefinition"]["containerDefinitions"][0]
    assert migrate["command"] == ["medrobotics", "db", "upgrade"]
    assert migrate["image"].endswith(f"/{ENV}-data-ingestion:{deployment.tag}")


def test_guide_log_groups_exist_with_retention(deployment):
    groups = deployment.aws(
        "logs", "describe-log-groups", "--log-group-name-prefix", f"/aws/ecs/{ENV}/"
    )["logGroups"]
    by_name = {g["logGroupName"]: g for g in groups}
    for service in ("data-ingestion", "api-service"):
        group = by_name[f"/aws/ecs/{ENV}/{service}"]
        assert group["retentionInDays"] == 90
    # `aws logs tail` (the guide) exists only in AWS CLI v2; v1 reads the same group so:
    events = deployment.run(
        "aws", "logs", "filter-log-events", "--log-group-name", f"/aws/ecs/{ENV}/api-service"
    )
    assert events.returncode == 0, events.stderr


def test_dashboard_dimensions_match_the_deployed_resources(deployment):
    body = json.loads(
        deployment.aws("cloudwatch", "get-dashboard", "--dashboard-name", f"{ENV}-ecs-monitoring")[
            "DashboardBody"
        ]
    )
    (lb,) = deployment.aws("elbv2", "describe-load-balancers", "--names", f"{ENV}-alb")[
        "LoadBalancers"
    ]
    lb_full_name = lb["LoadBalancerArn"].split(":loadbalancer/")[1]
    tg_full_names = {
        g["TargetGroupArn"].split(":")[5]
        for g in deployment.aws("elbv2", "describe-target-groups")["TargetGroups"]
    }
    seen_lb, seen_tg, seen_services = set(), set(), set()
    for widget in body["widgets"]:
        for metric in widget["properties"]["metrics"]:
            fields = [f for f in metric if not isinstance(f, dict)]
            dims = dict(zip(fields[2::2], fields[3::2], strict=True))
            seen_lb.add(dims.get("LoadBalancer"))
            seen_tg.add(dims.get("TargetGroup"))
            seen_services.add(dims.get("ServiceName"))
            if "ClusterName" in dims:
                assert dims["ClusterName"] == f"{ENV}-cluster"
    assert seen_lb - {None} == {lb_full_name}
    assert seen_tg - {None} == tg_full_names
    assert seen_services - {None} == {
        f"{ENV}-data-ingestion",
        f"{ENV}-api-service",
        f"{ENV}-archiver",
    }


def test_archiver_runs_the_ingestion_image_with_the_hash_key_as_a_secret(deployment):
    key = deployment.aws("secretsmanager", "describe-secret", "--secret-id", HASH_KEY)
    tags = {t["Key"]: t["Value"] for t in key["Tags"]}
    assert tags["CreatedBy"] == "deploy-ecs.sh", "no foundation secret here: deploy made one"
    value = deployment.aws("secretsmanager", "get-secret-value", "--secret-id", HASH_KEY)
    assert re.fullmatch(r"[0-9a-f]{64}", value["SecretString"])
    definition = deployment.aws(
        "ecs", "describe-task-definition", "--task-definition", f"{ENV}-archiver"
    )["taskDefinition"]
    (container,) = definition["containerDefinitions"]
    assert container["command"] == ["medrobotics", "archiver"]
    assert container["image"].endswith(f"/{ENV}-data-ingestion:{deployment.tag}")
    assert not container.get("portMappings")
    # (the emulator keeps no task-level CPU and memory: the template tests check those)
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["MEDROBOTICS_ARCHIVE_MEMORY_MB"] == "1024"
    assert "MEDROBOTICS_LAKE_HASH_KEY" not in env
    assert value["SecretString"] not in json.dumps(definition)
    secrets = {s["name"]: s["valueFrom"] for s in container["secrets"]}
    assert secrets["MEDROBOTICS_LAKE_HASH_KEY"] == key["ARN"]
    assert secrets["RDS_SECRET"].split(":secret:")[1].startswith(f"{ENV}/rds-credentials")
    assert container["logConfiguration"]["options"]["awslogs-group"] == f"/aws/ecs/{ENV}/archiver"
    # Ingestion no longer archives, and never sees the key.
    ingestion = deployment.aws(
        "ecs", "describe-task-definition", "--task-definition", f"{ENV}-data-ingestion"
    )["taskDefinition"]["containerDefinitions"][0]
    assert {e["name"]: e["value"] for e in ingestion["environment"]}["MEDROBOTICS_ARCHIVE"] == "0"
    assert "MEDROBOTICS_LAKE_HASH_KEY" not in json.dumps(ingestion)


def test_archiver_service_is_one_task_that_never_overlaps_for_long(deployment):
    (svc,) = deployment.aws(
        "ecs", "describe-services", "--cluster", f"{ENV}-cluster", "--services", f"{ENV}-archiver"
    )["services"]
    assert svc["status"] == "ACTIVE"
    assert svc["desiredCount"] == 1
    assert svc["taskDefinition"].split("/")[-1].startswith(f"{ENV}-archiver:")
    assert not svc.get("loadBalancers")
    # (the emulator keeps no deployment configuration: the template tests check the 0 % / 100 %)


def test_lake_catalog_results_bucket_and_analyst_policy(deployment):
    bucket = deployment.results_bucket
    encryption = deployment.aws("s3api", "get-bucket-encryption", "--bucket", bucket)
    (rule,) = encryption["ServerSideEncryptionConfiguration"]["Rules"]
    # the foundation's lake key: the results are as encrypted as the lake
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    # (the emulator applies only a bucket's encryption and tags from a template: the template
    # tests check its lifecycle expiry and public access block)
    tags = deployment.aws("s3api", "get-bucket-tagging", "--bucket", bucket)["TagSet"]
    assert {"Key": "Name", "Value": f"{ENV}-athena-results"} in tags
    policies = deployment.aws("iam", "list-policies", "--scope", "Local")["Policies"]
    (analyst,) = [p for p in policies if p["PolicyName"] == f"{ENV}-lake-analyst"]
    version = deployment.aws(
        "iam",
        "get-policy-version",
        "--policy-arn",
        analyst["Arn"],
        "--version-id",
        analyst["DefaultVersionId"],
    )["PolicyVersion"]["Document"]
    document = json.loads(version) if isinstance(version, str) else version
    text = json.dumps(document)
    raw = deployment.aws("cloudformation", "describe-stacks", "--stack-name", f"{ENV}-foundation")[
        "Stacks"
    ][0]["Outputs"]
    raw_bucket = {o["OutputKey"]: o["OutputValue"] for o in raw}["RawDataBucketName"]
    assert f":workgroup/{ENV}-lake" in text
    assert f":database/medrobotics_{ENV}_lake" in text
    assert f"{raw_bucket}/raw/telemetry/*" in text and f"{raw_bucket}/raw/snapshots/*" in text
    assert "batches" not in text, "raw request bodies are not the analysts'"
    assert f"{bucket}/results/*" in text
    outputs = deployment.aws(
        "cloudformation", "describe-stacks", "--stack-name", f"{ENV}-lake-catalog"
    )["Stacks"][0]["Outputs"]
    values = {o["OutputKey"]: o["OutputValue"] for o in outputs}
    assert values["WorkGroupName"] == f"{ENV}-lake"
    assert values["LakeDatabaseName"] == f"medrobotics_{ENV}_lake"


def test_redeploy_updates_the_stacks_and_rolls_out_a_new_tag(deployment):
    build = deployment.script("build-and-push.sh", extra={"IMAGE_TAG": "v2"})
    assert build.returncode == 0, build.stderr
    # The migration already ran in the first deployment; skip it to keep the test short.
    roll = deployment.script(
        "deploy-ecs.sh",
        extra={"RDS_PASSWORD": PASSWORD, "IMAGE_TAG": "v2", "SKIP_MIGRATION": "true"},
    )
    assert roll.returncode == 0, roll.stderr
    assert f"updating stack {ENV}-ecs-services" in roll.stderr
    tasks = deployment.aws("cloudformation", "describe-stacks", "--stack-name", f"{ENV}-ecs-tasks")
    tasks_parameters = {
        p["ParameterKey"]: p["ParameterValue"] for p in tasks["Stacks"][0]["Parameters"]
    }
    # The task definitions are pinned to the new tag. (Moto re-creates a resource
    # only when its template text changes, so the revision itself stays at the
    # first tag here; the first deploy's test shows that the tag reaches the image.)
    assert tasks_parameters["ImageTag"] == "v2"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in tasks["Stacks"][0]["Outputs"]}
    services = deployment.aws(
        "cloudformation", "describe-stacks", "--stack-name", f"{ENV}-ecs-services"
    )
    parameters = {
        p["ParameterKey"]: p["ParameterValue"] for p in services["Stacks"][0]["Parameters"]
    }
    for key in (
        "ApiServiceTaskDefinitionArn",
        "DataIngestionTaskDefinitionArn",
        "ArchiverTaskDefinitionArn",
    ):
        # The services stack is handed the revisions the tasks stack made.
        assert parameters[key] == outputs[key]


def test_deploy_restores_a_secret_scheduled_for_deletion(deployment):
    deleted = deployment.run(
        "aws", "secretsmanager", "delete-secret", "--secret-id", f"{ENV}/rds-credentials"
    )
    assert deleted.returncode == 0, deleted.stderr
    again = deployment.script(
        "deploy-ecs.sh", extra={"RDS_PASSWORD": PASSWORD, "SKIP_MIGRATION": "true"}
    )
    assert again.returncode == 0, again.stderr
    assert "which was scheduled for deletion" in again.stderr
    described = deployment.aws(
        "secretsmanager", "describe-secret", "--secret-id", f"{ENV}/rds-credentials"
    )
    assert not described.get("DeletedDate")
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags["CreatedBy"] == "deploy-ecs.sh", "cleanup.sh deletes only what deploy created"


def test_deploy_refuses_an_image_that_was_not_pushed(deployment):
    result = deployment.script(
        "deploy-ecs.sh", extra={"RDS_PASSWORD": PASSWORD, "IMAGE_TAG": "never-pushed"}
    )
    assert result.returncode != 0
    assert "never-pushed is not in ECR" in result.stderr


def test_zz_cleanup_removes_everything_in_reverse_order(deployment):
    refused = deployment.script("cleanup.sh")
    assert refused.returncode != 0 and "--yes" in refused.stderr
    # A secret of the environment's that a stack made (the emulator does not create the
    # foundation's own database secret, so one is made here with CloudFormation's tag).
    stack_owned = deployment.aws(
        "secretsmanager",
        "create-secret",
        "--name",
        f"{ENV}/bootstrap-key",
        "--secret-string",
        "not-a-real-key",
        "--tags",
        f"Key=aws:cloudformation:stack-name,Value={ENV}-foundation",
        f"Key=Environment,Value={ENV}",
    )["ARN"]
    result = deployment.script("cleanup.sh", "--yes")
    assert result.returncode == 0, result.stderr
    order = [
        line.split("deleting stack ")[1].split()[0]
        for line in result.stderr.splitlines()
        if "deleting stack " in line
    ]
    assert order == [
        f"{ENV}-{s}" for s in ("lake-catalog", "ecs-services", "ecs-tasks", "alb", "ecs-cluster")
    ]
    assert f"emptied the query results bucket {deployment.results_bucket}" in result.stderr
    buckets = deployment.aws("s3api", "list-buckets")["Buckets"]
    assert deployment.results_bucket not in {b["Name"] for b in buckets}
    stacks = deployment.aws("cloudformation", "describe-stacks")["Stacks"]
    remaining = {s["StackName"] for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"}
    assert remaining == {f"{ENV}-foundation"}
    repos = deployment.run("aws", "ecr", "describe-repositories", "--output", "json")
    assert f"{ENV}-api-service" not in repos.stdout
    groups = deployment.aws(
        "logs", "describe-log-groups", "--log-group-name-prefix", f"/aws/ecs/{ENV}/"
    )["logGroups"]
    assert groups == []
    secret = deployment.aws(
        "secretsmanager", "describe-secret", "--secret-id", f"{ENV}/rds-credentials"
    )
    assert secret.get("DeletedDate"), "the secret deploy-ecs.sh created is scheduled for deletion"
    kept = deployment.aws("secretsmanager", "describe-secret", "--secret-id", stack_owned)
    assert not kept.get("DeletedDate"), "a secret a stack owns is never deleted by cleanup"
    assert f"keeping secret {ENV}/bootstrap-key: it belongs to the stack {ENV}-foundation" in (
        result.stderr
    )
    # The task definition revisions the tasks stack retained are deregistered.
    for family in ("data-ingestion", "api-service", "archiver", "migrate"):
        active = deployment.aws(
            "ecs",
            "list-task-definitions",
            "--family-prefix",
            f"{ENV}-{family}",
            "--status",
            "ACTIVE",
        )["taskDefinitionArns"]
        assert active == [], family
