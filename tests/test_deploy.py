"""Deployment files stay valid."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose client not installed")
def test_docker_compose_config_is_valid():
    env = dict(os.environ, DJANGO_SECRET_KEY="x", FLOWER_PASSWORD="y")
    out = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"], env=env,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    for service in ("web", "worker-cpu", "worker-gpu", "beat", "flower", "redis", "postgres"):
        assert f"  {service}:" in out.stdout


def test_check_deploy_is_clean_with_production_settings():
    env = dict(os.environ, DJANGO_SECURE="true", DJANGO_SECRET_KEY="k" * 64 + "-production-secret-from-the-environment",
               DJANGO_DEBUG="false", DJANGO_ALLOWED_HOSTS="accents.example.com")
    out = subprocess.run([str(ROOT / ".venv/bin/python"), "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
