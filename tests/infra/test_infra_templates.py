"""What the templates must contain, read from the YAML itself."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from infra_support import PIPELINE_TEMPLATE, REPO_ROOT, SCRIPTS_DIR, TEMPLATES, load_template

ORDER = list(TEMPLATES)
HEALTHCHECK_COMMAND = [
    "CMD",
    "python",
    "-c",
    "import urllib.request,os; urllib.request.urlopen("
    "'http://127.0.0.1:'+os.environ.get('PORT','8080')+'/health', timeout=2)",
]


def walk(node: Any):
    """Yield every dict and list inside a template fragment."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def sub_string(value: Any) -> str:
    """The template string of an Fn::Sub (short or list form)."""
    assert isinstance(value, dict) and "Fn::Sub" in value, value
    sub = value["Fn::Sub"]
    return sub[0] if isinstance(sub, list) else sub


def imports_of(template: dict) -> set[str]:
    names = set()
    for node in walk(template):
        if isinstance(node, dict) and "Fn::ImportValue" in node:
            names.add(sub_string(node["Fn::ImportValue"]))
    return names


def exports_of(template: dict) -> set[str]:
    return {
        sub_string(output["Export"]["Name"])
        for output in template.get("Outputs", {}).values()
        if "Export" in output
    }


def resources(template: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def one(template: dict, kind: str) -> dict:
    found = resources(template, kind)
    assert len(found) == 1, f"expected one {kind}, found {sorted(found)}"
    return next(iter(found.values()))


def strip_novalue(items: list) -> list:
    """Items of a list with Fn::If entries resolved to their 'true' branch."""
    out = []
    for item in items:
        if isinstance(item, dict) and "Fn::If" in item:
            item = item["Fn::If"][1]
        if item != {"Ref": "AWS::NoValue"}:
            out.append(item)
    return out


# ---------------------------------------------------------------- every template


@pytest.mark.parametrize("name", ORDER)
def test_parameters_and_outputs_are_described(templates, name):
    template = templates[name]
    assert template.get("Description")
    assert "EnvironmentName" in template["Parameters"]
    for key, parameter in template["Parameters"].items():
        assert parameter.get("Description"), f"{name}: parameter {key} has no Description"
    for key, output in template.get("Outputs", {}).items():
        assert output.get("Description"), f"{name}: output {key} has no Description"


@pytest.mark.parametrize("name", ORDER)
def test_exports_are_named_after_the_environment(templates, name):
    for export in exports_of(templates[name]):
        assert export.startswith("${EnvironmentName}-"), export


@pytest.mark.parametrize("name", ORDER)
def test_every_import_is_exported_by_an_earlier_stack(templates, name):
    earlier = ORDER[: ORDER.index(name)]
    available = set().union(*(exports_of(templates[t]) for t in earlier)) if earlier else set()
    missing = imports_of(templates[name]) - available
    assert not missing, f"{name} imports {sorted(missing)} that no earlier stack exports"


def test_foundation_exports_exactly_what_is_consumed(templates):
    exported = exports_of(templates["foundation"])
    imported = set().union(*(imports_of(templates[t]) for t in ORDER[1:]))
    deploy_script = (SCRIPTS_DIR / "deploy-ecs.sh").read_text()
    unused = {
        e for e in exported - imported if e.removeprefix("${EnvironmentName}-") not in deploy_script
    }
    assert not unused, f"foundation exports nobody reads: {sorted(unused)}"
    from_foundation = {
        i for i in imported if i not in set().union(*(exports_of(templates[t]) for t in ORDER[1:]))
    }
    assert from_foundation <= exported


def test_no_short_form_import_value(templates):
    # The emulator mis-reads `!ImportValue` over a nested `Fn::Sub` mapping.
    for name in ORDER:
        text = (SCRIPTS_DIR.parent / "cloudformation" / TEMPLATES[name]).read_text()
        assert "!ImportValue" not in text, name


@pytest.mark.parametrize("name", ORDER)
def test_no_iam_wildcards_beyond_the_unavoidable(templates, name):
    allowed_star = {
        "ecr:GetAuthorizationToken",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
    }
    template = templates[name]
    for logical, resource in template["Resources"].items():
        if resource["Type"] not in (
            "AWS::IAM::Role",
            "AWS::IAM::Policy",
            "AWS::IAM::ManagedPolicy",
        ):
            continue
        for node in walk(resource["Properties"]):
            if not (isinstance(node, dict) and node.get("Effect") == "Allow" and "Action" in node):
                continue
            actions = node["Action"] if isinstance(node["Action"], list) else [node["Action"]]
            assert not any(a == "*" or a.endswith(":*") for a in actions), (logical, actions)
            if node.get("Resource") == "*" and "Principal" not in node:
                assert set(actions) <= allowed_star, (logical, actions)


# ---------------------------------------------------------------- cluster


def test_cluster_capacity_providers_and_insights(templates):
    cluster = one(templates["ecs-cluster"], "AWS::ECS::Cluster")["Properties"]
    assert sub_string(cluster["ClusterName"]) == "${EnvironmentName}-cluster"
    assert set(cluster["CapacityProviders"]) == {"FARGATE", "FARGATE_SPOT"}
    assert {"Name": "containerInsights", "Value": "enabled"} in cluster["ClusterSettings"]


def test_log_groups_retained_encrypted_with_retention(templates):
    groups = resources(templates["ecs-cluster"], "AWS::Logs::LogGroup")
    names = {sub_string(g["Properties"]["LogGroupName"]) for g in groups.values()}
    assert {
        "/aws/ecs/${EnvironmentName}/data-ingestion",
        "/aws/ecs/${EnvironmentName}/api-service",
    } <= names
    for logical, group in groups.items():
        assert group["Properties"]["RetentionInDays"], logical
        assert group["Properties"]["KmsKeyId"], logical


@pytest.mark.parametrize("name", ORDER)
def test_named_log_groups_go_with_a_failed_first_create(templates, name):
    # Retained on stack deletion (audit trail), but removed when the first create
    # fails: otherwise the scripted delete-and-recreate of a ROLLBACK_COMPLETE
    # stack fails with "already exists".
    for logical, group in resources(templates[name], "AWS::Logs::LogGroup").items():
        assert "LogGroupName" in group["Properties"], logical
        assert group["DeletionPolicy"] == "RetainExceptOnCreate", (name, logical)
        assert group["UpdateReplacePolicy"] == "Retain", (name, logical)


def test_task_definition_revisions_survive_an_update_of_their_stack(templates):
    # A failed ecs-services update rolls the services back to the revisions they
    # ran; those must still be ACTIVE, so replacing a revision keeps the old one.
    definitions = resources(templates["ecs-tasks"], "AWS::ECS::TaskDefinition")
    assert set(definitions) == {
        "DataIngestionTaskDefinition",
        "ApiServiceTaskDefinition",
        "ArchiverTaskDefinition",
        "MigrationTaskDefinition",
    }
    for logical, definition in definitions.items():
        assert definition["UpdateReplacePolicy"] == "Retain", logical
        assert definition["DeletionPolicy"] == "Retain", logical
    # and the revisions reach the services as parameters (an export could never change)
    services = templates["ecs-services"]
    for service, parameter in (
        ("DataIngestionService", "DataIngestionTaskDefinitionArn"),
        ("ApiService", "ApiServiceTaskDefinitionArn"),
        ("ArchiverService", "ArchiverTaskDefinitionArn"),
    ):
        assert services["Resources"][service]["Properties"]["TaskDefinition"] == {"Ref": parameter}
        assert "Export" not in templates["ecs-tasks"]["Outputs"][parameter]


def test_the_guides_four_stack_names_are_the_scripts(templates):
    deploy = (SCRIPTS_DIR / "deploy-ecs.sh").read_text()
    for suffix, stack_name in (
        ("ecs-cluster", "CLUSTER_STACK"),
        ("alb", "ALB_STACK"),
        ("ecs-tasks", "TASKS_STACK"),
        ("ecs-services", "SERVICES_STACK"),
    ):
        assert f'{stack_name}="${{ENV_NAME}}-{suffix}"' in deploy


# ---------------------------------------------------------------- load balancer


def test_alb_is_public_and_hardened(templates):
    alb = templates["alb"]
    lb = one(alb, "AWS::ElasticLoadBalancingV2::LoadBalancer")["Properties"]
    assert lb["Scheme"] == "internet-facing"
    assert [sub_string(s["Fn::ImportValue"]) for s in lb["Subnets"]] == [
        "${EnvironmentName}-PublicSubnet1",
        "${EnvironmentName}-PublicSubnet2",
    ]
    attributes = {a["Key"]: a["Value"] for a in lb["LoadBalancerAttributes"]}
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"
    assert attributes["access_logs.s3.enabled"] == "true"
    assert attributes["access_logs.s3.bucket"] == {"Ref": "AccessLogsBucket"}
    association = one(alb, "AWS::WAFv2::WebACLAssociation")
    assert association["Condition"] == "AttachWebAcl"


def test_https_listener_and_redirect(templates):
    alb = templates["alb"]
    assert alb["Conditions"]["UseHttps"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "DomainName"}, ""]}]
    }
    https = alb["Resources"]["HttpsListener"]
    assert https["Condition"] == "UseHttps"
    assert https["Properties"]["Protocol"] == "HTTPS"
    assert https["Properties"]["Port"] == 443
    (certificate,) = https["Properties"]["Certificates"]
    assert certificate["CertificateArn"] == {
        "Fn::If": ["HasCertificateArn", {"Ref": "CertificateArn"}, {"Ref": "Certificate"}]
    }
    assert alb["Parameters"]["SslPolicy"]["Default"].startswith("ELBSecurityPolicy-TLS13")
    assert all("TLS13" in p for p in alb["Parameters"]["SslPolicy"]["AllowedValues"])
    fixed = https["Properties"]["DefaultActions"][0]
    assert fixed["Type"] == "fixed-response"
    assert fixed["FixedResponseConfig"]["StatusCode"] == "404"

    http = alb["Resources"]["HttpListener"]["Properties"]
    assert http["Port"] == 80
    condition, with_cert, without_cert = http["DefaultActions"][0]["Fn::If"]
    assert condition == "UseHttps"
    assert with_cert["Type"] == "redirect"
    assert with_cert["RedirectConfig"]["Protocol"] == "HTTPS"
    assert with_cert["RedirectConfig"]["Port"] == "443"
    assert with_cert["RedirectConfig"]["StatusCode"] == "HTTP_301"
    assert without_cert["Type"] == "fixed-response"
    assert without_cert["FixedResponseConfig"]["StatusCode"] == "404"

    transport = alb["Outputs"]["TransportSecurity"]["Value"]["Fn::If"]
    assert transport[0] == "UseHttps"
    assert "WARNING" in transport[2] and "HTTP" in transport[2]
    url = alb["Outputs"]["LoadBalancerURL"]["Value"]["Fn::If"]
    assert url[0] == "UseHttps"
    # the name the certificate carries, never the load balancer's own
    assert sub_string(url[1]) == "https://${DomainName}"
    assert sub_string(url[2]) == "http://${LoadBalancer.DNSName}"


def test_domain_gets_a_dns_validated_certificate_and_an_alias(templates):
    alb = templates["alb"]
    params = alb["Parameters"]
    assert params["DomainName"]["Default"] == ""
    assert params["HostedZoneId"]["Default"] == ""
    res = alb["Resources"]
    cert = res["Certificate"]
    assert cert["Type"] == "AWS::CertificateManager::Certificate"
    assert cert["Condition"] == "RequestCertificate"
    props = cert["Properties"]
    assert props["DomainName"] == {"Ref": "DomainName"}
    assert props["ValidationMethod"] == "DNS"
    assert props["DomainValidationOptions"] == [
        {"DomainName": {"Ref": "DomainName"}, "HostedZoneId": {"Ref": "HostedZoneId"}}
    ]
    alias = res["AliasRecord"]
    assert alias["Type"] == "AWS::Route53::RecordSet"
    assert alias["Condition"] == "CreateAlias"
    assert alias["Properties"]["Name"] == {"Ref": "DomainName"}
    assert alias["Properties"]["Type"] == "A"
    assert alias["Properties"]["AliasTarget"]["DNSName"] == {
        "Fn::GetAtt": ["LoadBalancer", "DNSName"]
    }
    assert alias["Properties"]["AliasTarget"]["HostedZoneId"] == {
        "Fn::GetAtt": ["LoadBalancer", "CanonicalHostedZoneID"]
    }
    conditions = alb["Conditions"]
    assert {"Condition": "UseHttps"} in conditions["RequestCertificate"]["Fn::And"]
    assert {"Condition": "HasHostedZone"} in conditions["CreateAlias"]["Fn::And"]
    # a certificate without the name it covers, or a requested one without its zone, is refused
    rules = alb["Rules"]
    assert rules["CertificateNeedsDomain"]["Assertions"][0]["Assert"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "DomainName"}, ""]}]
    }
    assert rules["RequestedCertificateNeedsZone"]["Assertions"][0]["Assert"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "HostedZoneId"}, ""]}]
    }


def test_waf_rate_limit_counts_only_api_requests(templates):
    acl = templates["alb"]["Resources"]["WebAcl"]["Properties"]
    rate_rules = [r for r in acl["Rules"] if "RateBasedStatement" in r["Statement"]]
    (rule,) = rate_rules
    assert "Block" in rule["Action"]
    statement = rule["Statement"]["RateBasedStatement"]
    assert statement["AggregateKeyType"] == "IP"
    match = statement["ScopeDownStatement"]["ByteMatchStatement"]
    # fleets behind one NAT address post /ingest/* freely (the service limits each key)
    assert match["FieldToMatch"] == {"UriPath": {}}
    assert match["PositionalConstraint"] == "STARTS_WITH"
    assert match["SearchString"] == "/api/"
    assert not any("ingest" in json.dumps(r) for r in rate_rules)


def test_path_rules_route_to_the_right_target_groups(templates):
    alb = templates["alb"]
    routes = {}
    for rule in resources(alb, "AWS::ElasticLoadBalancingV2::ListenerRule").values():
        props = rule["Properties"]
        assert props["ListenerArn"] == {
            "Fn::If": ["UseHttps", {"Ref": "HttpsListener"}, {"Ref": "HttpListener"}]
        }
        (condition,) = props["Conditions"]
        assert condition["Field"] == "path-pattern"
        (pattern,) = condition["PathPatternConfig"]["Values"]
        (action,) = props["Actions"]
        assert action["Type"] == "forward"
        routes[pattern] = action["TargetGroupArn"]["Ref"]
    assert routes == {"/api/*": "ApiTargetGroup", "/ingest/*": "IngestionTargetGroup"}


@pytest.mark.parametrize(
    ("logical", "port"), [("ApiTargetGroup", 5000), ("IngestionTargetGroup", 8080)]
)
def test_target_group_health_checks(templates, logical, port):
    props = templates["alb"]["Resources"][logical]["Properties"]
    assert props["Port"] == port
    assert props["TargetType"] == "ip"
    assert props["HealthCheckPath"] == "/health"
    assert props["Matcher"] == {"HttpCode": "200"}
    attributes = {a["Key"]: a["Value"] for a in props["TargetGroupAttributes"]}
    assert int(attributes["deregistration_delay.timeout_seconds"]) <= 30


# ---------------------------------------------------------------- task definitions

SERVICES = {
    "DataIngestionTaskDefinition": ("data-ingestion", 8080),
    "ApiServiceTaskDefinition": ("api-service", 5000),
}


@pytest.mark.parametrize("logical", sorted(SERVICES))
def test_container_hardening_and_contract(templates, logical):
    name, port = SERVICES[logical]
    props = templates["ecs-tasks"]["Resources"][logical]["Properties"]
    assert props["RequiresCompatibilities"] == ["FARGATE"]
    assert props["NetworkMode"] == "awsvpc"
    (container,) = props["ContainerDefinitions"]
    assert container["Name"] == name
    assert sub_string(container["Image"]).endswith(f"/${{EnvironmentName}}-{name}:${{ImageTag}}")
    assert container["User"].split(":")[0] == "10001"
    assert container["ReadonlyRootFilesystem"] is True
    assert {"SourceVolume": "tmp", "ContainerPath": "/tmp", "ReadOnly": False} in container[
        "MountPoints"
    ]
    assert {"Name": "tmp"} in props["Volumes"]
    assert container["StopTimeout"] == 30
    assert container["HealthCheck"]["Command"] == HEALTHCHECK_COMMAND
    assert container["PortMappings"] == [{"ContainerPort": port, "Protocol": "tcp"}]
    env = {e["Name"]: e["Value"] for e in strip_novalue(container["Environment"])}
    assert env["PORT"] == str(port)
    assert env["ENVIRONMENT"] == "production"
    assert env["MEDROBOTICS_AUTH"] == "required"
    assert env["MEDROBOTICS_METRICS"] == "emf"
    assert {"RDS_HOST", "RDS_PORT", "RDS_DBNAME", "S3_RAW_BUCKET", "AWS_REGION"} <= set(env)
    secrets = {s["Name"]: s["ValueFrom"] for s in strip_novalue(container["Secrets"])}
    assert secrets["RDS_SECRET"] == {"Ref": "DatabaseSecretArn"}
    assert secrets["MEDROBOTICS_BOOTSTRAP_KEY"] == {"Ref": "BootstrapKeySecretArn"}
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"


def test_no_secret_in_any_environment(templates):
    for name in ORDER:
        for node in walk(templates[name]):
            env = node.get("Environment") if isinstance(node, dict) else None
            if isinstance(env, list):
                for entry in strip_novalue(env):
                    assert not re.search(r"PASSWORD|SECRET|BOOTSTRAP_KEY", entry["Name"]), entry


def test_migration_task_runs_the_upgrade(templates):
    props = templates["ecs-tasks"]["Resources"]["MigrationTaskDefinition"]["Properties"]
    (container,) = props["ContainerDefinitions"]
    assert container["Command"] == ["medrobotics", "db", "upgrade"]
    assert "-data-ingestion:${ImageTag}" in sub_string(container["Image"])
    assert container["ReadonlyRootFilesystem"] is True
    assert props["TaskRoleArn"] == {"Fn::GetAtt": ["MigrationTaskRole", "Arn"]}


def _actions(statement: dict) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def _statements(role: dict) -> list[dict]:
    out = []
    for policy in strip_novalue(role["Properties"]["Policies"]):
        out.extend(strip_novalue(policy["PolicyDocument"]["Statement"]))
    return out


def test_task_roles_least_privilege(templates):
    res = templates["ecs-tasks"]["Resources"]
    api_actions = {a for s in _statements(res["ApiServiceTaskRole"]) for a in _actions(s)}
    assert not any(a.startswith("s3:") for a in api_actions), "the API service needs no S3"

    # Ingestion runs with MEDROBOTICS_ARCHIVE=0: the lake is the archiver's alone.
    ingestion = {a for s in _statements(res["DataIngestionTaskRole"]) for a in _actions(s)}
    assert not any(a.startswith("s3:") for a in ingestion), "ingestion no longer writes the lake"

    archiver = _statements(res["ArchiverTaskRole"])
    s3 = [s for s in archiver if any(a.startswith("s3:") for a in _actions(s))]
    objects = next(s for s in s3 if "s3:PutObject" in s["Action"])
    # compaction deletes the parts it replaced; nothing beyond object reads and writes
    assert set(objects["Action"]) == {
        "s3:PutObject",
        "s3:GetObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
    }
    assert objects["Resource"]["Fn::Sub"][0].endswith(":::${Bucket}/${LakePrefix}*")
    listing = next(s for s in s3 if s["Action"] == "s3:ListBucket")
    assert [p["Fn::Sub"] for p in listing["Condition"]["StringLike"]["s3:prefix"]] == [
        "${LakePrefix}*"
    ]
    secrets = next(s for s in archiver if s["Action"] == "secretsmanager:GetSecretValue")
    assert secrets["Resource"] == [{"Ref": "DatabaseSecretArn"}, {"Ref": "LakeHashKeySecretArn"}]
    for role in ("DataIngestionTaskRole", "ApiServiceTaskRole", "MigrationTaskRole"):
        secret = [
            s for s in _statements(res[role]) if s["Action"] == "secretsmanager:GetSecretValue"
        ]
        assert secret and secret[0]["Resource"] == {"Ref": "DatabaseSecretArn"}, role
    # The hash key reaches the archiver's roles only.
    for logical, role in resources(templates["ecs-tasks"], "AWS::IAM::Role").items():
        if not logical.startswith("Archiver"):
            assert "LakeHashKeySecretArn" not in json.dumps(role), logical


@pytest.mark.parametrize(
    ("role", "log_group"),
    [
        ("DataIngestionExecutionRole", "${EnvironmentName}-DataIngestionLogGroupArn"),
        ("ApiServiceExecutionRole", "${EnvironmentName}-ApiServiceLogGroupArn"),
        ("ArchiverExecutionRole", "${EnvironmentName}-ArchiverLogGroupArn"),
    ],
)
def test_execution_roles_write_only_their_log_groups(templates, role, log_group):
    statements = _statements(templates["ecs-tasks"]["Resources"][role])
    (logs,) = [s for s in statements if "logs:PutLogEvents" in s["Action"]]
    resources_ = logs["Resource"] if isinstance(logs["Resource"], list) else [logs["Resource"]]
    names = [sub_string(r["Fn::ImportValue"]) for r in resources_]
    assert log_group in names
    assert all(n.endswith("LogGroupArn") for n in names)


# ---------------------------------------------------------------- services


@pytest.mark.parametrize(
    ("logical", "port", "tg"),
    [
        ("DataIngestionService", 8080, "${EnvironmentName}-IngestionTargetGroupArn"),
        ("ApiService", 5000, "${EnvironmentName}-ApiTargetGroupArn"),
    ],
)
def test_services_use_capacity_providers_in_private_subnets(templates, logical, port, tg):
    res = templates["ecs-services"]["Resources"]
    props = res[logical]["Properties"]
    assert "LaunchType" not in props
    providers = {s["CapacityProvider"] for s in props["CapacityProviderStrategy"]}
    assert providers == {"FARGATE", "FARGATE_SPOT"}
    network = props["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    assert [sub_string(s["Fn::ImportValue"]) for s in network["Subnets"]] == [
        "${EnvironmentName}-PrivateSubnet1",
        "${EnvironmentName}-PrivateSubnet2",
    ]
    (sg,) = network["SecurityGroups"]
    ingress = res[sg["Ref"]]["Properties"]["SecurityGroupIngress"]
    assert len(ingress) == 1
    assert ingress[0]["FromPort"] == ingress[0]["ToPort"] == port
    assert sub_string(ingress[0]["SourceSecurityGroupId"]["Fn::ImportValue"]) == (
        "${EnvironmentName}-LoadBalancerSecurityGroup"
    )
    (lb,) = props["LoadBalancers"]
    assert lb["ContainerPort"] == port
    assert sub_string(lb["TargetGroupArn"]["Fn::ImportValue"]) == tg
    breaker = props["DeploymentConfiguration"]["DeploymentCircuitBreaker"]
    assert breaker == {"Enable": True, "Rollback": True}
    assert props["EnableExecuteCommand"] == {"Ref": "EnableExecuteCommand"}


def test_no_service_has_a_launch_type(templates):
    for name in ORDER:
        for resource in resources(templates[name], "AWS::ECS::Service").values():
            assert "LaunchType" not in resource["Properties"]


@pytest.mark.parametrize(
    ("target", "min_param", "max_param", "low", "high"),
    [
        (
            "DataIngestionScalableTarget",
            "DataIngestionMinCapacity",
            "DataIngestionMaxCapacity",
            1,
            5,
        ),
        ("ApiServiceScalableTarget", "ApiServiceMinCapacity", "ApiServiceMaxCapacity", 1, 10),
    ],
)
def test_scaling_bounds_and_targets(templates, target, min_param, max_param, low, high):
    template = templates["ecs-services"]
    props = template["Resources"][target]["Properties"]
    assert props["MinCapacity"] == {"Ref": min_param}
    assert props["MaxCapacity"] == {"Ref": max_param}
    assert template["Parameters"][min_param]["Default"] == low
    assert template["Parameters"][max_param]["Default"] == high
    assert template["Parameters"]["CpuTargetPercent"]["Default"] == 70
    kinds = {}
    for policy in resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy").values():
        p = policy["Properties"]
        if p["ScalingTargetId"] != {"Ref": target}:
            continue
        config = p["TargetTrackingScalingPolicyConfiguration"]
        kind = config["PredefinedMetricSpecification"]["PredefinedMetricType"]
        kinds[kind] = config
    assert kinds["ECSServiceAverageCPUUtilization"]["TargetValue"] == {"Ref": "CpuTargetPercent"}
    label = kinds["ALBRequestCountPerTarget"]["PredefinedMetricSpecification"]["ResourceLabel"]
    assert sub_string(label) == "${LoadBalancer}/${TargetGroup}"


def test_alarms_cover_5xx_unhealthy_and_latency_with_dimensions(templates):
    alarms = resources(templates["ecs-services"], "AWS::CloudWatch::Alarm")
    metrics = {}
    for logical, alarm in alarms.items():
        props = alarm["Properties"]
        if props["Namespace"] != "AWS/ApplicationELB":
            continue
        dims = {d["Name"] for d in props["Dimensions"]}
        assert "LoadBalancer" in dims, logical
        if props["MetricName"] != "HTTPCode_ELB_5XX_Count":
            assert "TargetGroup" in dims, logical
        assert props["AlarmActions"], logical
        metrics.setdefault(props["MetricName"], 0)
        metrics[props["MetricName"]] += 1
    assert metrics == {
        "HTTPCode_ELB_5XX_Count": 1,
        "HTTPCode_Target_5XX_Count": 2,
        "UnHealthyHostCount": 2,
        "TargetResponseTime": 2,
    }


def render_dashboard(template: dict) -> dict:
    props = one(template, "AWS::CloudWatch::Dashboard")["Properties"]
    assert sub_string(props["DashboardName"]) == "${EnvironmentName}-ecs-monitoring"
    body, variables = props["DashboardBody"]["Fn::Sub"]
    values = {name: f"<{name}>" for name in variables}
    values.update(
        {
            "AWS::Region": "us-east-1",
            "MetricsEnvironment": "production",
            "ArchiveLagAlarmSeconds": "900",
        }
    )
    rendered = re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], body)
    return json.loads(rendered)


def test_dashboard_metrics_carry_their_dimensions(templates):
    dashboard = render_dashboard(templates["ecs-services"])
    required_dims = {
        "AWS/ApplicationELB": {"LoadBalancer"},
        "AWS/ECS": {"ClusterName", "ServiceName"},
        "ECS/ContainerInsights": {"ClusterName", "ServiceName"},
        "MedRobotics": {"Environment", "Service"},
    }
    seen: dict[str, set[str]] = {}
    for widget in dashboard["widgets"]:
        ids = set()
        expressions = []
        for metric in widget["properties"]["metrics"]:
            options = metric[-1] if isinstance(metric[-1], dict) else {}
            if "expression" in options:
                expressions.append(options["expression"])
                continue
            fields = metric[:-1] if options else metric
            namespace, name, *pairs = fields
            assert pairs and len(pairs) % 2 == 0, f"{name} has no dimensions"
            dims = dict(zip(pairs[::2], pairs[1::2], strict=True))
            assert required_dims[namespace] <= set(dims), (namespace, name, dims)
            if "TargetGroup" in dims:
                assert "LoadBalancer" in dims
            assert all(v for v in dims.values())
            seen.setdefault(name, set()).add(
                dims.get("Service") or dims.get("ServiceName") or dims.get("TargetGroup") or "-"
            )
            if "id" in options:
                ids.add(options["id"])
        for expression in expressions:
            for ref in re.findall(r"\b([a-z]\w*)\b", expression):
                if ref not in ("PERIOD",):
                    assert ref in ids, (expression, ids)
    for metric in (
        "RequestCount",
        "HTTPCode_Target_5XX_Count",
        "TargetResponseTime",
        "RequestLatency",
    ):
        assert len(seen.get(metric, set())) == 2, f"{metric} is not shown for both services"
    for metric in ("CPUUtilization", "MemoryUtilization", "RunningTaskCount"):
        assert len(seen.get(metric, set())) == 3, f"{metric} is not shown for all three services"
    assert seen["IngestedSamples"] == {"data-ingestion"}
    # The lag comes from the archiver service now (ingestion tasks no longer archive).
    assert seen["ArchiveLagSeconds"] == {"archiver"}
    assert seen["ArchivePendingRows"] == {"archiver"}
    assert "RequestCount" in seen and "HTTPCode_ELB_5XX_Count" in seen


def test_dashboard_shows_p50_and_p99_latency(templates):
    dashboard = render_dashboard(templates["ecs-services"])
    stats = {
        (m[1], m[-1].get("stat"))
        for w in dashboard["widgets"]
        for m in w["properties"]["metrics"]
        if isinstance(m[-1], dict) and len(m) > 2
    }
    assert {("TargetResponseTime", "p50"), ("TargetResponseTime", "p99")} <= stats


# ---------------------------------------------------------------- foundation


def test_foundation_keeps_data_private(templates):
    res = templates["foundation"]["Resources"]
    db = res["Database"]
    assert db["DeletionPolicy"] == "Snapshot"
    assert db["Properties"]["PubliclyAccessible"] is False
    assert db["Properties"]["StorageEncrypted"] is True
    assert "{{resolve:secretsmanager:" in sub_string(db["Properties"]["MasterUserPassword"])
    bucket = res["RawDataBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    subnets = {
        k: v["Properties"]
        for k, v in resources(templates["foundation"], "AWS::EC2::Subnet").items()
    }
    assert all(s["MapPublicIpOnLaunch"] is False for s in subnets.values())


def test_every_checkov_skip_is_listed_with_a_reason(templates):
    listed = yaml.safe_load((REPO_ROOT / "checkov-skips.yaml").read_text())
    assert all(entry["reason"].strip() for entry in listed)
    documented = {(e["template"], e["resource"], e["check"]) for e in listed}
    in_templates = set()
    every = {TEMPLATES[name]: template for name, template in templates.items()}
    every[PIPELINE_TEMPLATE] = load_template(PIPELINE_TEMPLATE)
    assert sorted(every) == sorted(p.name for p in (REPO_ROOT / "cloudformation").glob("*.yaml"))
    for file_name, template in every.items():
        for logical, resource in template["Resources"].items():
            for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
                assert skip.get("comment"), (file_name, logical, skip["id"])
                in_templates.add((file_name, logical, skip["id"]))
    assert in_templates == documented
    config = yaml.safe_load((REPO_ROOT / ".checkov.yaml").read_text())
    assert "skip-check" not in config, "skips belong on their resources, listed in the file"
    assert config["skip-download"] is True


# ---------------------------------------------------------------- lake archiver


def test_archiver_task_runs_the_ingestion_image_without_http(templates):
    res = templates["ecs-tasks"]["Resources"]
    props = res["ArchiverTaskDefinition"]["Properties"]
    params = templates["ecs-tasks"]["Parameters"]
    (container,) = props["ContainerDefinitions"]
    assert container["Command"] == ["medrobotics", "archiver"]
    assert sub_string(container["Image"]).endswith("/${EnvironmentName}-data-ingestion:${ImageTag}")
    assert "PortMappings" not in container and "HealthCheck" not in container
    assert container["User"].split(":")[0] == "10001"
    assert container["ReadonlyRootFilesystem"] is True
    # its own size, 1 vCPU / 2 GB by default, and an export bound well below it
    assert props["Cpu"] == {"Ref": "ArchiverCpu"} and params["ArchiverCpu"]["Default"] == "1024"
    assert props["Memory"] == {"Ref": "ArchiverMemory"}
    assert params["ArchiverMemory"]["Default"] == "2048"
    env = {e["Name"]: e["Value"] for e in strip_novalue(container["Environment"])}
    assert env["MEDROBOTICS_ARCHIVE_MEMORY_MB"] == {"Ref": "ArchiveMemoryMb"}
    assert params["ArchiveMemoryMb"]["Default"] <= int(params["ArchiverMemory"]["Default"]) // 2
    assert env["MEDROBOTICS_METRICS"] == "emf", "the lag reaches CloudWatch as EMF lines"
    assert {"RDS_HOST", "S3_RAW_BUCKET", "MEDROBOTICS_LAKE_PREFIX"} <= set(env)
    secrets = {s["Name"]: s["ValueFrom"] for s in strip_novalue(container["Secrets"])}
    assert secrets == {
        "RDS_SECRET": {"Ref": "DatabaseSecretArn"},
        "MEDROBOTICS_LAKE_HASH_KEY": {"Ref": "LakeHashKeySecretArn"},
    }
    log_group = container["LogConfiguration"]["Options"]["awslogs-group"]
    assert sub_string(log_group["Fn::ImportValue"]) == "${EnvironmentName}-ArchiverLogGroup"
    assert props["TaskRoleArn"] == {"Fn::GetAtt": ["ArchiverTaskRole", "Arn"]}
    assert props["ExecutionRoleArn"] == {"Fn::GetAtt": ["ArchiverExecutionRole", "Arn"]}


def test_ingestion_tasks_do_not_archive(templates):
    props = templates["ecs-tasks"]["Resources"]["DataIngestionTaskDefinition"]["Properties"]
    (container,) = props["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in strip_novalue(container["Environment"])}
    assert env["MEDROBOTICS_ARCHIVE"] == "0"
    assert "MEDROBOTICS_LAKE_HASH_KEY" not in json.dumps(container)


def test_archiver_service_is_one_unscaled_task_without_a_load_balancer(templates):
    template = templates["ecs-services"]
    props = template["Resources"]["ArchiverService"]["Properties"]
    assert props["DesiredCount"] == 1
    assert "LoadBalancers" not in props and "HealthCheckGracePeriodSeconds" not in props
    config = props["DeploymentConfiguration"]
    assert (config["MinimumHealthyPercent"], config["MaximumPercent"]) == (0, 100)
    assert [s["CapacityProvider"] for s in props["CapacityProviderStrategy"]] == ["FARGATE"]
    for target in resources(template, "AWS::ApplicationAutoScaling::ScalableTarget").values():
        assert "ArchiverService" not in json.dumps(target), "the archiver is never scaled"
    (sg,) = props["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"]
    group = template["Resources"][sg["Ref"]]["Properties"]
    assert "SecurityGroupIngress" not in group, "nothing connects to the archiver"
    ingress = [
        r["Properties"]
        for r in resources(template, "AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["SourceSecurityGroupId"] == sg
    ]
    assert [(i["FromPort"], i["ToPort"]) for i in ingress] == [(5432, 5432)]


def test_archive_lag_alarm_watches_the_metric_the_archiver_publishes(templates):
    from medrobotics import metrics

    template = templates["ecs-services"]
    props = template["Resources"]["ArchiveLagAlarm"]["Properties"]
    metrics.archive_lag(seconds=12.0, rows=3)
    line = metrics.emf_line("archiver", "production", lag=True)
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert props["Namespace"] == directive["Namespace"]
    assert props["MetricName"] in {m["Name"] for m in directive["Metrics"]}
    assert line[props["MetricName"]] == 12.0
    dims = {d["Name"]: d["Value"] for d in props["Dimensions"]}
    assert set(dims) == set(directive["Dimensions"][0])
    assert dims == {"Environment": {"Ref": "MetricsEnvironment"}, "Service": line["Service"]}
    assert props["Statistic"] == "Maximum"
    assert props["Threshold"] == {"Ref": "ArchiveLagAlarmSeconds"}
    # No line at all means no archiver: that is an alarm too.
    assert props["TreatMissingData"] == "breaching"
    assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_foundation_generates_the_lake_hash_key_and_keeps_it_with_the_lake(templates):
    res = templates["foundation"]["Resources"]
    key = res["LakeHashKeySecret"]
    assert key["Type"] == "AWS::SecretsManager::Secret"
    assert sub_string(key["Properties"]["Name"]) == "${EnvironmentName}/medrobotics/lake-hash-key"
    generated = key["Properties"]["GenerateSecretString"]
    assert generated["PasswordLength"] >= 32 and "SecretStringTemplate" not in generated
    assert key["Properties"]["KmsKeyId"] == {"Ref": "FoundationKey"}
    # the raw-data bucket is retained, and its patient keys were made with this key
    assert key["DeletionPolicy"] == res["RawDataBucket"]["DeletionPolicy"] == "Retain"
    outputs = templates["foundation"]["Outputs"]
    assert outputs["LakeHashKeySecretArn"]["Value"] == {"Ref": "LakeHashKeySecret"}


# ---------------------------------------------------------------- lake catalog

GLUE_TYPES = {
    "UtcDateTime": "timestamp",
    "Date": "date",
    "Double": "double",
    "Integer": "bigint",
    "BigInteger": "bigint",
    "Boolean": "boolean",
    "String": "string",
    "Text": "string",
    "JSON": "array<string>",
    "Variant": "array<string>",
}
# docs/security.md: the lake never holds these in the clear.
PHI_DROPPED = {"patient_age", "patient_gender", "surgeon_notes"}


def _glue_tables(templates: dict) -> dict[str, dict]:
    tables = resources(templates["lake-catalog"], "AWS::Glue::Table")
    return {t["Properties"]["TableInput"]["Name"]: t["Properties"] for t in tables.values()}


def _expected_columns(name: str) -> list[tuple[str, str]]:
    from medrobotics.storage import tables as t

    table = t.metadata.tables[name]
    out = []
    for column in table.columns:
        if column.name in PHI_DROPPED:
            continue
        kind = GLUE_TYPES[type(column.type).__name__]
        if column.name == "patient_id":
            out.append(("patient_key", "string"))  # hex HMAC-SHA256 of the patient id
        elif name == "telemetry" and column.name == "robot_id":
            out.insert(0, ("robot_id", kind))  # first in the files, as the layout says
        else:
            out.append((column.name, kind))
    return out


def test_glue_tables_are_the_agreed_layout(templates):
    found = _glue_tables(templates)
    assert set(found) == {"telemetry", "robots", "procedures", "outcomes", "maintenance"}
    for name, props in found.items():
        table = props["TableInput"]
        assert props["DatabaseName"] == {"Ref": "LakeDatabase"}
        assert table["TableType"] == "EXTERNAL_TABLE"
        columns = [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
        assert columns == _expected_columns(name), name
        assert not PHI_DROPPED & {c for c, _ in columns} and "patient_id" not in dict(columns)
        assert table["PartitionKeys"] == [
            {"Name": "date", "Type": "string", "Comment": table["PartitionKeys"][0]["Comment"]}
        ]
        p = table["Parameters"]
        assert p["projection.enabled"] == "true"
        assert p["projection.date.type"] == "date"
        assert p["projection.date.format"] == "yyyy-MM-dd"
        assert p["projection.date.range"] == "2000-01-01,NOW+1DAYS"
        where = "telemetry/_manifests" if name == "telemetry" else f"snapshots/{name}"
        template = p["storage.location.template"]["Fn::Sub"][0]
        assert template == f"s3://${{Bucket}}/${{LakePrefix}}{where}/date=${{!date}}/"
        location = table["StorageDescriptor"]["Location"]["Fn::Sub"][0]
        assert location == f"s3://${{Bucket}}/${{LakePrefix}}{where}/"
        serde = table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"]
        assert serde == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
        input_format = table["StorageDescriptor"]["InputFormat"]
        if name == "telemetry":
            # Athena follows the day manifest: the objects it lists, never the folder.
            assert input_format == "org.apache.hadoop.hive.ql.io.SymlinkTextInputFormat"
        else:
            assert input_format == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"


def test_glue_database_name_has_no_hyphens(templates):
    props = templates["lake-catalog"]["Resources"]["LakeDatabase"]["Properties"]
    name, variables = props["DatabaseInput"]["Name"]["Fn::Sub"]
    assert name == "medrobotics_${Env}_lake"
    assert variables["Env"] == {"Fn::Join": ["_", {"Fn::Split": ["-", {"Ref": "EnvironmentName"}]}]}


def test_athena_workgroup_enforces_encrypted_results_and_a_scan_limit(templates):
    template = templates["lake-catalog"]
    group = one(template, "AWS::Athena::WorkGroup")["Properties"]
    assert sub_string(group["Name"]) == "${EnvironmentName}-lake"
    config = group["WorkGroupConfiguration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    assert config["BytesScannedCutoffPerQuery"] == {"Ref": "BytesScannedCutoffPerQuery"}
    assert template["Parameters"]["BytesScannedCutoffPerQuery"]["MinValue"] == 10 * 1024**2
    condition, kms, s3 = config["ResultConfiguration"]["EncryptionConfiguration"]["Fn::If"]
    assert condition == "HasLakeKmsKey"
    assert kms == {"EncryptionOption": "SSE_KMS", "KmsKey": {"Ref": "LakeKmsKeyArn"}}
    assert s3 == {"EncryptionOption": "SSE_S3"}
    assert sub_string(config["ResultConfiguration"]["OutputLocation"]).startswith(
        "s3://${QueryResultsBucket}/"
    )
    bucket = template["Resources"]["QueryResultsBucket"]["Properties"]
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == {"Ref": "QueryResultsRetentionDays"}
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert "BucketEncryption" in bucket


def _resolve(node: Any) -> Any:
    """A template fragment with every intrinsic replaced by a plausible literal."""
    if isinstance(node, dict):
        if "Fn::Sub" in node:
            text = sub_string(node)
            text = text.replace("${!", "${")  # the literal ${date} Athena substitutes
            return re.sub(r"\$\{(?!date\})[^}]+\}", "x", text)
        if "Ref" in node:
            return "123456789012" if node["Ref"] == "AWS::AccountId" else "x"
        if "Fn::If" in node:
            return _resolve(node["Fn::If"][1])
        return {k: _resolve(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v) for v in node]
    return node


def test_glue_and_athena_definitions_fit_the_service_apis(templates):
    # The emulator cannot create Glue tables or Athena workgroups from a template; the
    # services' own API models (botocore's) check every field name and type instead.
    import botocore.session
    from botocore.validate import ParamValidator

    session = botocore.session.get_session()
    validator = ParamValidator()

    def check(service: str, operation: str, params: dict) -> None:
        model = session.get_service_model(service).operation_model(operation)
        report = validator.validate(params, model.input_shape)
        assert not report.has_errors(), report.generate_report()

    template = templates["lake-catalog"]
    database = template["Resources"]["LakeDatabase"]["Properties"]
    check("glue", "CreateDatabase", _resolve(database))
    for props in _glue_tables(templates).values():
        check("glue", "CreateTable", _resolve(props))
    group = one(template, "AWS::Athena::WorkGroup")["Properties"]
    # State and RecursiveDeleteOption are CloudFormation's own (UpdateWorkGroup, DeleteWorkGroup).
    params = _resolve(
        {k: v for k, v in group.items() if k not in ("State", "RecursiveDeleteOption")}
    )
    params["Configuration"] = params.pop("WorkGroupConfiguration")
    params["Configuration"]["BytesScannedCutoffPerQuery"] = 10 * 1024**3
    check("athena", "CreateWorkGroup", params)


def test_analyst_policy_only_queries_through_the_workgroup(templates):
    template = templates["lake-catalog"]
    policy = template["Resources"]["AnalystPolicy"]
    assert policy["Condition"] == "WithAnalystPolicy"
    statements = strip_novalue(policy["Properties"]["PolicyDocument"]["Statement"])
    actions = {a for s in statements for a in _actions(s)}
    writes = {a for a in actions if a.startswith("s3:Put")}
    assert writes == {"s3:PutObject"}
    (results,) = [s for s in statements if "s3:PutObject" in _actions(s)]
    assert sub_string(results["Resource"]).startswith("${QueryResultsBucket.Arn}/")
    assert not {a for a in actions if a.startswith("glue:") and not a.startswith("glue:Get")}
    assert not any(a.startswith(("s3:Delete", "iam:", "secretsmanager:")) for a in actions)
    for statement in statements:
        assert statement["Resource"] != "*", statement
    text = json.dumps(statements)
    assert "batches" not in text, "the raw request bodies stay with the archiver"
    (athena,) = [s for s in statements if any(a.startswith("athena:") for a in _actions(s))]
    assert sub_string(athena["Resource"]).endswith(":workgroup/${EnvironmentName}-lake")


def test_the_catalog_stack_is_deployed_and_removed_by_the_scripts():
    deploy = (SCRIPTS_DIR / "deploy-ecs.sh").read_text()
    cleanup = (SCRIPTS_DIR / "cleanup.sh").read_text()
    assert '"${CFN_DIR}/06-lake-catalog.yaml"' in deploy
    assert 'delete_stack "${ENV_NAME}-lake-catalog"' in cleanup
    assert cleanup.index("lake-catalog") < cleanup.index('delete_stack "${ENV_NAME}-ecs-services"')
