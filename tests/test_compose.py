"""docker-compose.yml, checked without a Docker engine: what `docker compose up` would need to
start safely (images, healthchecks behind depends_on, loopback-only ports, no secret literals,
one image for every Ray node, shared Ray storage), plus `docker compose config -q` when the
installed client has the compose plugin."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.fast  # no Ray, no MLflow: `make test-fast`

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$")
# `${VAR:?message}`: compose refuses to start while VAR is unset or empty.
REQUIRED_VAR = re.compile(r"^\$\{(\w+):\?[^}]*\}$")
VAR_REFERENCE = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")
URL_WITH_PASSWORD = re.compile(r"://[^:/@\s]+:([^@\s]+)@")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def strings(node: Any) -> list[str]:
    """Every string value in the parsed file (comments are not values)."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return [node] if isinstance(node, str) else []


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def test_the_four_services_exist_and_each_has_an_image_or_a_build(services) -> None:
    assert {"postgres", "mlflow", "ray-head", "ray-worker"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name


def test_every_healthy_condition_points_at_a_service_with_a_healthcheck(services) -> None:
    conditions = 0
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if rule.get("condition") == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), (name, target)
                conditions += 1
    assert conditions >= 3  # mlflow <- postgres, ray-head <- mlflow, ray-worker <- ray-head


def test_published_ports_are_bound_to_loopback_only(services) -> None:
    published = 0
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond this machine"
            published += 1
    assert published >= 2
    assert "ports" not in services["postgres"]
    assert "ports" not in services["ray-worker"]  # scaled replicas would collide


def test_secrets_come_from_env_and_are_required(services) -> None:
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_VAR.match(str(value)), f"{name}.{key} = {value!r}"
    for text in strings(services):
        for password in URL_WITH_PASSWORD.findall(text):
            assert REQUIRED_VAR.match(password), f"a literal password in a URL: {password!r}"


def test_env_example_names_every_variable_and_holds_no_secret(compose) -> None:
    example = env_example()
    used = {name for s in strings(compose) for name in VAR_REFERENCE.findall(s)}
    assert used <= set(example), f"not in .env.example: {sorted(used - set(example))}"
    secrets = {k: v for k, v in example.items() if SECRET_NAME.search(k)}
    assert secrets and all(v == "" for v in secrets.values()), secrets
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored and ".env" in (ROOT / ".dockerignore").read_text().split()


def test_ray_nodes_share_one_image_auth_shm_and_storage(services) -> None:
    head, worker, mlflow = services["ray-head"], services["ray-worker"], services["mlflow"]
    assert head["image"] == worker["image"] == mlflow["image"]
    assert head["build"] == worker["build"] == mlflow["build"]
    for node in (head, worker):
        assert node["environment"]["RAY_AUTH_MODE"] == "token"
        assert REQUIRED_VAR.match(node["environment"]["RAY_AUTH_TOKEN"])
        assert node.get("shm_size")
        assert "ray-results:/shared/ray_results" in node["volumes"]
    assert "--address=ray-head:6379" in worker["command"]
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r'"ray\[[a-z,]*tune[a-z,]*\]==\$\{RAY_VERSION\}"', dockerfile)
    assert re.search(r"^ARG RAY_VERSION=\d+\.\d+\.\d+$", dockerfile, re.M)


def test_mlflow_serves_postgres_runs_and_artifacts_to_the_other_containers(services) -> None:
    mlflow = services["mlflow"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    command = mlflow["command"]
    assert command[command.index("--artifacts-destination") + 1].startswith("/mlflow/")
    assert any(v.endswith(":/mlflow") for v in mlflow["volumes"])
    assert "mlflow:5000" in command[command.index("--allowed-hosts") + 1].split(",")
    assert command[command.index("--app-name") + 1] == "basic-auth"
    auth_ini = (ROOT / "docker" / "mlflow-auth.ini").read_text()
    assert "password" not in auth_ini.split("[mlflow]")[1].lower()


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return probe.returncode == 0


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    if not _compose_plugin():
        pytest.skip("the docker client here has no compose plugin (`docker compose version` "
                    "fails); the static checks above still ran")
    env = tmp_path / "test.env"
    env.write_text("".join(f"{k}={v or 'x' * 16}\n" for k, v in env_example().items()))
    result = subprocess.run(["docker", "compose", "--env-file", str(env), "-f", str(COMPOSE),
                             "config", "-q"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
