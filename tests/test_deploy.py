"""deploy/compose.yaml and deploy/nginx.conf (docs/deploy.md): no Docker engine runs
here, so the files are checked as files: the Compose file parses and has the roles of
DESIGN.md §10.7 (PostgreSQL, Redis, web ×2, worker ×2, exactly one beat), every variable
it gives llmrum is one that llmrum's settings or its image's entrypoint read, the values
start llmrum's settings as each role would, and the balancer sends to every web node."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose.yaml"
NGINX = ROOT / "deploy" / "nginx.conf"
ENTRYPOINT = ROOT / "scripts" / "docker-entrypoint.sh"
# What `docker compose` would be given in the shell for the ":?" (required) values.
REQUIRED = {"SECRET_KEY": "a-secret-key-of-the-deployment", "POSTGRES_PASSWORD": "pw"}


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def llmrum_services() -> dict[str, dict[str, Any]]:
    """The services that run the llmrum image, by name."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("image") == "llmrum:local"
    }


def role(service: dict[str, Any]) -> str:
    return str(service["command"][0])


def interpolate(value: object) -> str:
    """Compose's ${VAR:-default} and ${VAR:?message}, as with only REQUIRED set."""

    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in REQUIRED:
            return REQUIRED[name]
        assert op != ":?", f"{name} is required but the test gives no value"
        return rest if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, str(value))


def read_variables() -> set[str]:
    """Every environment variable llmrum's settings or its image's entrypoint read."""
    settings = (ROOT / "rumserver" / "settings.py").read_text()
    names = set(re.findall(r"env_(?:str|bool|int|float|list)\(\s*\"(\w+)\"", settings))
    names |= set(re.findall(r"os\.environ\.get\(\"(\w+)\"", settings))
    names |= set(re.findall(r"\$\{(\w+)", ENTRYPOINT.read_text()))
    return names


def test_the_compose_file_has_the_roles_of_a_deployment_on_several_machines():
    data = compose()
    services = data["services"]
    assert {"postgres", "redis"} <= set(services)
    roles = sorted(role(s) for s in llmrum_services().values())
    assert roles == ["beat", "migrate", "web", "web", "worker", "worker"]
    for name, service in llmrum_services().items():
        # Every role runs the one image built from the repository's Dockerfile...
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (
            ROOT / "Dockerfile"
        )
        # ...whose entrypoint knows the role (anything else is a manage.py command).
        if role(service) != "migrate":
            assert f"  {role(service)})" in ENTRYPOINT.read_text(), name
        assert "replicas" not in service.get("deploy", {}), "one beat, two of the others"
    for name, service in llmrum_services().items():
        if role(service) == "migrate":
            assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        else:
            # Nothing starts on a schema the code does not expect.
            assert service["depends_on"]["migrate"]["condition"] == (
                "service_completed_successfully"
            ), name
            # Only web nodes serve /healthz, which the image's HEALTHCHECK asks.
            assert ("healthcheck" in service) == (role(service) != "web"), name
        # Two migrates at once can collide: the one-shot service migrates, no web does.
        assert "LLMRUM_MIGRATE" not in service["environment"], name


def test_every_variable_the_compose_file_sets_is_read_by_llmrum():
    readable = read_variables()
    assert {"DATABASE_URL", "CELERY_BROKER_URL", "LLMRUM_CACHE_URL", "WEB_CONCURRENCY"} <= readable
    for name, service in llmrum_services().items():
        unknown = set(service["environment"]) - readable
        assert not unknown, f"{name} sets variables llmrum never reads: {sorted(unknown)}"


def test_every_role_shares_one_database_broker_and_rate_limit_cache():
    envs = {name: s["environment"] for name, s in llmrum_services().items()}
    for key in ("DATABASE_URL", "CELERY_BROKER_URL", "LLMRUM_CACHE_URL", "SECRET_KEY"):
        assert len({interpolate(env[key]) for env in envs.values()}) == 1, key
    env = next(iter(envs.values()))
    # The broker's queue and the rate-limit buckets on different Redis databases.
    assert interpolate(env["CELERY_BROKER_URL"]) != interpolate(env["LLMRUM_CACHE_URL"])
    assert "${SECRET_KEY:?" in COMPOSE.read_text(), "no default secret key in the file"


def test_the_load_balancer_is_the_only_trusted_proxy_and_reaches_every_web_node():
    services = compose()["services"]
    balancer = ipaddress.ip_address(services["lb"]["networks"]["llmrum"]["ipv4_address"])
    subnet = compose()["networks"]["llmrum"]["ipam"]["config"][0]["subnet"]
    assert balancer in ipaddress.ip_network(subnet)
    webs = {n: s for n, s in llmrum_services().items() if role(s) == "web"}
    for service in webs.values():
        trusted = [
            ipaddress.ip_network(c)
            for c in service["environment"]["LLMRUM_TRUSTED_PROXIES"].split(",")
        ]
        assert [balancer] == [n.network_address for n in trusted if n.num_addresses == 1]
        assert service["environment"]["FORWARDED_ALLOW_IPS"] == str(balancer)
    nginx = NGINX.read_text()
    upstream = re.search(r"upstream llmrum_web \{(.*?)\}", nginx, re.S)
    assert upstream is not None
    assert set(re.findall(r"server ([\w-]+):8000", upstream.group(1))) == set(webs)
    assert services["lb"]["volumes"] == ["./nginx.conf:/etc/nginx/nginx.conf:ro"]
    # OTLP bodies up to llmrum's own wire limit (16 MiB) reach llmrum, which answers
    # larger ones in OTLP's format; and a 429 is never tried on the other node.
    size = re.search(r"client_max_body_size (\d+)m;", nginx)
    assert size is not None and int(size.group(1)) >= 16
    retried = re.search(r"proxy_next_upstream ([^;]*);", nginx)
    assert retried is not None and "http_429" not in retried.group(1)


@pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx on PATH to check the file")
def test_nginx_accepts_the_balancers_configuration(tmp_path: Path):
    # The web nodes' names resolve only inside Compose's network: the loopback stands in.
    conf = re.sub(r"server web-\d+:8000", "server 127.0.0.1:8000", NGINX.read_text())
    (tmp_path / "nginx.conf").write_text(conf)
    result = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr",
         "-g", f"pid {tmp_path / 'nginx.pid'};"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


@pytest.mark.parametrize("service_role", ["migrate", "web", "worker", "beat"])
def test_each_roles_values_start_llmrums_settings(service_role: str, tmp_path: Path):
    service = next(s for s in llmrum_services().values() if role(s) == service_role)
    env = {name: interpolate(value) for name, value in service["environment"].items()}
    probe = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({'cache': s.CACHES['default']['BACKEND'], "
        "'db': s.DATABASES['default']['ENGINE'], 'broker': s.CELERY_BROKER_URL, "
        "'trusted': [str(n) for n in s.LLMRUM_TRUSTED_PROXIES], 'hosts': s.ALLOWED_HOSTS}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={
            "PATH": os.environ.get("PATH", ""),
            "DJANGO_SETTINGS_MODULE": "rumserver.settings",
            "LLMRUM_DATA_DIR": str(tmp_path),  # the image's ENV; here a folder of the test's
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["db"] == "django.db.backends.postgresql"
    assert loaded["cache"] == "django.core.cache.backends.redis.RedisCache"
    assert loaded["broker"] == "redis://redis:6379/0"
    assert "localhost" in loaded["hosts"]
    # The image's HEALTHCHECK asks 127.0.0.1:8000: Django must allow that Host.
    assert "urlopen('http://127.0.0.1:8000/healthz'" in (ROOT / "Dockerfile").read_text()
    assert "127.0.0.1" in loaded["hosts"]
    assert loaded["trusted"] == (["172.30.0.10/32"] if service_role == "web" else [])


def test_the_deployment_guide_names_every_variable_the_compose_file_sets():
    guide = (ROOT / "docs" / "deploy.md").read_text()
    names = {n for s in llmrum_services().values() for n in s["environment"]}
    missing = sorted(n for n in names if f"`{n}`" not in guide)
    assert not missing, f"docs/deploy.md does not explain {missing}"
