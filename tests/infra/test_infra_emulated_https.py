"""The real scripts deploy an environment on a domain to moto: HTTPS on that name.

A second environment in the same emulator, created on HTTPS from the start (the
emulator cannot add a conditional record set to an existing stack). Its ACM has
no CloudFormation certificate, so the stack is given one requested from ACM
itself (CertificateArn). The emulator also keeps no CloudFormation record set
in the zone: the template tests check the stack's own DNS-validated certificate
and the alias record.
"""

from __future__ import annotations

import os

import pytest
from infra_support import HERE, VENV_BIN, find_tool, make_sandbox
from test_infra_emulated_deploy import Deployment

ENV = "fleet"
REGION = "us-east-1"
DOMAIN = "fleet.example.org"


@pytest.fixture(scope="module")
def deployment(moto_endpoint, tmp_path_factory):
    find_tool("aws")
    find_tool("git")
    root = make_sandbox(tmp_path_factory.mktemp("checkout") / "repo")
    env = {
        "PATH": os.pathsep.join(
            [str(HERE / "bin"), str(VENV_BIN), os.environ.get("PATH", "/usr/bin:/bin")]
        ),
        "HOME": str(root.parent),
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "ENVIRONMENT_NAME": ENV,
        "FAKE_DOCKER_LOG": str(root.parent / "docker.log"),
        "POLL_SECONDS": "1",
        "STACK_TIMEOUT_SECONDS": "120",
        "TASK_TIMEOUT_SECONDS": "60",
    }
    dep = Deployment(root, env)
    dep.zone = dep.aws(
        "route53", "create-hosted-zone", "--name", "example.org", "--caller-reference", ENV
    )["HostedZone"]["Id"].split("/")[-1]
    dep.certificate = dep.aws(
        "acm", "request-certificate", "--domain-name", DOMAIN, "--validation-method", "DNS"
    )["CertificateArn"]
    build = dep.script("build-and-push.sh")
    assert build.returncode == 0, build.stderr
    deploy = dep.script(
        "deploy-ecs.sh",
        extra={
            "DEPLOY_FOUNDATION": "true",
            "RDS_PASSWORD": "x",
            "DOMAIN_NAME": DOMAIN,
            "HOSTED_ZONE_ID": dep.zone,
            "CERTIFICATE_ARN": dep.certificate,
        },
    )
    assert deploy.returncode == 0, deploy.stderr
    dep.deploy_log = deploy.stderr
    return dep


def test_guide_verify_command_returns_the_https_name(deployment):
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
    assert result.stdout.strip() == f"https://{DOMAIN}"
    assert "PLAIN HTTP" not in deployment.deploy_log
    assert f"HTTPS on https://{DOMAIN}" in deployment.deploy_log


def test_https_serves_the_routes_and_http_answers_301(deployment):
    (lb,) = deployment.aws("elbv2", "describe-load-balancers", "--names", f"{ENV}-alb")[
        "LoadBalancers"
    ]
    listeners = {
        listener["Port"]: listener
        for listener in deployment.aws(
            "elbv2", "describe-listeners", "--load-balancer-arn", lb["LoadBalancerArn"]
        )["Listeners"]
    }
    assert set(listeners) == {80, 443}
    https = listeners[443]
    assert https["Protocol"] == "HTTPS"
    assert https["Certificates"][0]["CertificateArn"] == deployment.certificate
    assert https["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    (redirect,) = listeners[80]["DefaultActions"]
    assert redirect["Type"] == "redirect"
    assert redirect["RedirectConfig"]["Protocol"] == "HTTPS"
    assert redirect["RedirectConfig"]["Port"] == "443"
    assert redirect["RedirectConfig"]["StatusCode"] == "HTTP_301"
    rules = deployment.aws("elbv2", "describe-rules", "--listener-arn", https["ListenerArn"])
    patterns = set()
    for rule in rules["Rules"]:
        if not rule["IsDefault"]:
            (condition,) = rule["Conditions"]
            values = (condition.get("PathPatternConfig") or {}).get("Values") or condition["Values"]
            patterns.update(values)
    assert patterns == {"/api/*", "/ingest/*"}, "the path rules sit on the HTTPS listener"
    plain = deployment.aws(
        "elbv2", "describe-rules", "--listener-arn", listeners[80]["ListenerArn"]
    )
    assert [r for r in plain["Rules"] if not r["IsDefault"]] == [], "nothing is served on HTTP"
