"""Shared helpers of the infrastructure tests: templates, tools, sandbox checkouts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CFN_DIR = REPO_ROOT / "cloudformation"
SCRIPTS_DIR = REPO_ROOT / "scripts"
VENDOR = "src/medrobotics/ui/static/vendor"
"""Where `make assets` puts the browser libraries the images ship."""
HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent

# Deploy order of the stacks, with the names the guide and the scripts use.
TEMPLATES = {
    "foundation": "00-foundation.yaml",
    "ecs-cluster": "01-ecs-cluster.yaml",
    "alb": "02-alb.yaml",
    "ecs-tasks": "03-ecs-task-definitions.yaml",
    "ecs-services": "04-ecs-services.yaml",
    "lake-catalog": "06-lake-catalog.yaml",
}
# Deployed once per environment by an administrator, not by the scripts: the
# pipeline's OIDC provider and roles.
PIPELINE_TEMPLATE = "05-github-oidc.yaml"


class CfnLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation short-form tags into long form."""


def _construct_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    if tag_suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(name: str) -> dict:
    with open(CFN_DIR / TEMPLATES.get(name, name), encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)


def find_tool(name: str) -> str:
    """Locate a command: the project venv first, then PATH. In CI a missing tool fails."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required in CI and was found neither in {VENV_BIN} nor on PATH")
    pytest.skip(f"{name} is not installed (install the dev dependencies)")
    raise AssertionError  # unreachable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_sandbox(root: Path) -> Path:
    """A git checkout holding the real scripts and templates and stub Dockerfiles."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(SCRIPTS_DIR, root / "scripts")
    shutil.copytree(CFN_DIR, root / "cloudformation")
    (root / "pyproject.toml").write_text('[project]\nname = "medrobotics"\nversion = "9.8.7"\n')
    # `make assets` stands in for `npm ci` and the copy into the package (the real Makefile's).
    (root / "Makefile").write_text(f"assets:\n\tmkdir -p {VENDOR}\n\ttouch {VENDOR}/.installed\n")
    for service in ("data-ingestion", "api-service"):
        (root / "services" / service).mkdir(parents=True)
        (root / "services" / service / "Dockerfile").write_text("FROM scratch\n")
    git = ["git", "-C", str(root), "-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "sandbox"], check=True)
    return root


def git_short_sha(root: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def bin_dir_with(tmp: Path, **tools: str) -> Path:
    """A directory of executables named after the keys, each exec'ing the given command."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name, command in tools.items():
        path = tmp / name
        path.write_text(f'#!/usr/bin/env bash\nexec {command} "$@"\n')
        path.chmod(0o755)
    return tmp
