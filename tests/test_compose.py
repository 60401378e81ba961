"""Docker cannot run here, so the compose file and Dockerfile are checked by reading them; so is the docs site's
settings table."""

import re
from pathlib import Path

import yaml

from app import GPU_WORKERS, default_workers

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_db_is_pgvector_with_a_named_volume_and_a_health_check():
    db = _compose()["services"]["db"]
    assert db["image"].startswith("pgvector/pgvector:")
    volume = db["volumes"][0].split(":")[0]
    assert volume in _compose()["volumes"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert db["command"][0] == "postgres" and any(c.startswith("shared_buffers=") for c in db["command"])
    assert "shm_size" in db, "parallel HNSW builds need more /dev/shm than Docker's 64 MB"


def test_api_builds_waits_for_a_healthy_db_and_can_scale():
    api = _compose()["services"]["api"]
    assert api["build"] == "."
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
    assert "container_name" not in api
    assert all("-" in str(p).rsplit(":", 1)[0] for p in api["ports"]), "a fixed host port cannot be --scale'd"
    assert "DATABASE_URL" in api["environment"]


def test_the_cpu_image_takes_cpu_wheels_and_a_gpu_variant_reserves_an_nvidia_device():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in dockerfile
    # torch and torchvision at the tested versions, from the index: the constraints name both
    assert """pip install --index-url "$TORCH_INDEX" $(grep -E '^torch(vision)?==' constraints.txt)""" in dockerfile
    pinned = re.findall(r"^(torch(?:vision)?)==", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    assert sorted(pinned) == ["torch", "torchvision"]
    assert "pip install -c /tmp/constraints.txt ." in dockerfile  # the rest at the tested versions
    gpu = _compose()["services"]["api-gpu"]
    assert gpu["profiles"] == ["gpu"] and "/whl/cu" in gpu["build"]["args"]["TORCH_INDEX"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["environment"]["INSPECT_DEVICE"] == "cuda" and "DATABASE_URL" in gpu["environment"]
    assert gpu["environment"]["WEB_CONCURRENCY"] == f"${{API_GPU_WORKERS:-{GPU_WORKERS}}}"  # 4 served twice 1's


def test_run_sh_serves_several_workers_on_a_gpu_and_one_on_a_cpu(monkeypatch):
    """Where ``WEB_CONCURRENCY`` is unset, run.sh asks :func:`app.default_workers`, which follows the device the
    network will run on; a value the user sets is kept."""
    from config import get_settings

    for device, workers in (("cuda", GPU_WORKERS), ("cuda:1", GPU_WORKERS), ("cpu", 1)):
        monkeypatch.setenv("INSPECT_DEVICE", device)
        get_settings.cache_clear()
        assert default_workers() == workers
    get_settings.cache_clear()
    script = (ROOT / "run.sh").read_text()
    assert 'if [ -z "${WEB_CONCURRENCY:-}" ]' in script and "print(default_workers())" in script
    assert script.index("export WEB_CONCURRENCY") < script.index("exec .venv/bin/uvicorn")


def test_ingest_is_a_one_off_job_with_the_dataset_mounted():
    ingest = _compose()["services"]["ingest"]
    assert ingest["profiles"] == ["jobs"]
    assert ingest["entrypoint"][-2:] == ["-m", "ingest"]
    assert any(":/data:" in v for v in ingest["volumes"])


def test_credentials_come_from_the_environment_only():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD" in text
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and line[0] != "#"
    )
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "DATASET_DIR"} <= set(example)
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for name in {p.split(".")[0] for p in packages}:  # every package pip installs must be in the image
        assert f"COPY {name} ./{name}" in (ROOT / "Dockerfile").read_text(), name
    assert 'CMD ["uvicorn", "app.main:app"' in (ROOT / "Dockerfile").read_text()


def test_pip_installs_every_file_of_the_source_tree():
    """The image installs the project as a wheel (so does ``pip install .``), not in place as the tests run it: a
    package missing from pyproject's list, or a file its package-data patterns miss (a page's new asset, an alembic
    template), imports from a checkout and is missing only in the container, where the service fails. Read by
    setuptools' rules: a listed package brings its own ``.py`` files, a file of any other kind only where its
    package's patterns match its name."""
    import fnmatch
    import subprocess
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages, data = set(setuptools["packages"]), setuptools["package-data"]
    tracked = subprocess.run(["git", "ls-files", "*__init__.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    sources = {Path(path).parts[0] for path in tracked.stdout.split()} - {"tests"}  # a new top-level package too
    assert sources, "git lists no package"
    left_out = []
    for top in sorted(sources | {p.split(".")[0] for p in packages}):
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts:
                continue
            package = ".".join(path.parent.relative_to(ROOT).parts)
            if package not in packages or (
                path.suffix != ".py" and not any(fnmatch.fnmatch(path.name, p) for p in data.get(package, []))
            ):
                left_out.append(str(path.relative_to(ROOT)))
    assert left_out == [], "installed nowhere: list the package or a package-data pattern in pyproject.toml"


def test_the_server_keeps_idle_connections_longer_than_its_clients_do():
    """A server that closes an idle connection as a client reuses it loses that request; the image, run.sh and
    the tests all serve with :data:`app.KEEP_ALIVE`, longer than httpx keeps an idle connection."""
    import json

    import httpx

    from app import KEEP_ALIVE, NO_ACCESS_LOG

    assert int(KEEP_ALIVE[1]) > httpx.Limits().keepalive_expiry
    command = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ["))
    flags = json.loads(command.removeprefix("CMD "))
    assert flags[flags.index(KEEP_ALIVE[0]) + 1] == KEEP_ALIVE[1]
    served = next(line for line in (ROOT / "run.sh").read_text().splitlines() if "uvicorn app.main:app" in line)
    assert " ".join(KEEP_ALIVE) in served
    assert flags[-1] == NO_ACCESS_LOG and served.endswith(NO_ACCESS_LOG)  # each request logged once, as JSON


def test_the_docs_document_every_setting():
    from config import Settings

    readme = (ROOT / "docs" / "configuration.md").read_text()
    for name, field in Settings.model_fields.items():
        variable = name.upper() if name in ("database_url", "database_replica_urls") else f"INSPECT_{name.upper()}"
        assert f"| `{variable}` |" in readme, f"{variable} ({field.description}) is missing from docs/configuration.md"


def test_db_replica_makes_itself_a_streaming_standby_of_db_and_can_scale():
    services = _compose()["services"]
    replica, db = services["db-replica"], services["db"]
    assert replica["image"] == db["image"], "a standby must run the primary's PostgreSQL and pgvector"
    assert replica["depends_on"]["db"]["condition"] == "service_healthy"
    named = [v for v in replica["volumes"] if v.split(":")[0] in _compose()["volumes"]]
    assert "container_name" not in replica and not named, "a named volume cannot be shared by scaled standbys"
    script = next(v for v in replica["volumes"] if v.endswith(":ro")).split(":")[0]
    text = (ROOT / script).read_text()
    assert "pg_basebackup -h db" in text and " -R" in text and "-X stream" in text
    assert replica["entrypoint"][-1] == "/" + Path(script).name
    allow = next(v for v in db["volumes"] if "docker-entrypoint-initdb.d" in v).split(":")[0]
    assert "host replication all all" in (ROOT / allow).read_text()
    assert any(c.startswith("wal_keep_size=") for c in db["command"])
    assert "DATABASE_REPLICA_URLS" in services["api"]["environment"]
    assert "DATABASE_REPLICA_URLS=" in (ROOT / ".env.example").read_text()


def test_fit_workers_run_beside_the_api_and_scale_with_a_gpu_variant():
    services = _compose()["services"]
    for name in ("worker", "worker-gpu"):
        worker = services[name]
        assert worker["command"] == ["python", "-m", "ingest", "worker"]
        assert worker["depends_on"]["db"]["condition"] == "service_healthy"
        assert "container_name" not in worker and "ports" not in worker
        assert "DATABASE_URL" in worker["environment"] and "INSPECT_WEIGHTS" in worker["environment"]
    assert "profiles" not in services["worker"], "docker compose up starts a worker with the API"
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["environment"]["INSPECT_DEVICE"] == "cuda"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


def test_an_empty_weights_variable_means_unset():
    """Compose passes INSPECT_WEIGHTS through, empty when .env leaves it so: that must mean torchvision's download,
    not a file named ''."""
    from config import Settings

    assert Settings(weights="").weights is None
    assert Settings(weights="/weights/r18.pth").weights == "/weights/r18.pth"


def test_every_dependency_is_pinned_to_the_version_installed():
    """A clean machine (CI) installs within constraints.txt (scripts/install.sh), so it must name every dependency
    pyproject.toml declares, at a version that satisfies it, and that version must be the one these tests run
    with: otherwise a release since the lock (a ruff that formats differently) fails a run that passed here."""
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, pin = line.partition("==")
            pinned[canonicalize_name(name)] = pin
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not in constraints.txt: run scripts/lock.sh"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (requirement, pinned[name])
        assert version(requirement.name) == pinned[name], f"{requirement.name}: installed {version(requirement.name)}"


def test_the_example_environment_gives_the_compose_files_defaults():
    """``cp .env.example .env`` is the quick start: every variable the example sets that the compose file also
    defaults must have that default there (a user who copies it gets the measured settings, not an old value)."""
    text = (ROOT / "docker-compose.yml").read_text()
    defaults = dict(re.findall(r"\$\{(\w+):-([^}]*)\}", text))
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and line[0] != "#"
    )
    shared = sorted(set(defaults) & set(example))
    assert len(shared) >= 10, shared
    assert {name: example[name] for name in shared} == {name: defaults[name] for name in shared}


def test_the_alert_rules_watch_metrics_the_service_exports():
    """Prometheus is not run here either: its rules file is read, and every metric its expressions name is one the
    service's registry exports (a renamed metric would leave a rule silent forever), scraped by the job the docs'
    scrape configuration names; the drift rules wait before they fire, so a window of one answer pages nobody."""
    from app.main import app  # noqa: F401 (registers the collectors)
    from app.observability import REGISTRY

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {family.name + s for family in REGISTRY.collect() for s in suffixes.get(family.type, ("",))}
    rules = yaml.safe_load((ROOT / "docker" / "prometheus-alerts.yml").read_text())["groups"][0]["rules"]
    named = set()
    for rule in rules:
        assert rule["labels"]["severity"] and rule["annotations"]["summary"], rule["alert"]
        named |= set(re.findall(r"\binspect_\w+", rule["expr"]))
        if "drift_warning" in rule["expr"]:
            assert rule["for"] == "30m", rule["alert"]
    assert named and named <= exported, named - exported
    assert {"inspect_drift_warning", "inspect_inspections_unrecorded_total"} <= named
    jobs = set(re.findall(r'up\{job="(\w+)"\}', " ".join(rule["expr"] for rule in rules)))
    scraped = set(re.findall(r"job_name: (\w+)", (ROOT / "docs" / "operations.md").read_text()))
    assert jobs and jobs <= scraped
