"""The compose stack can start: what issue 19 found broken, checked from the files.

- Kafka keeps its data on its volume, and advertises an address the containers can resolve
  (the service name) and one the host can (published port, ``localhost``);
- Alertmanager starts with its secrets read from mounted files, never literal ``${...}``
  (it does not expand variables), and ``amtool check-config`` accepts the file when amtool exists;
- each worker has its own stable ``TOUCHSTREAM_INSTANCE_ID`` (static membership);
- every touchstream variable the stack sets is one that ``streams/settings.py`` reads;
- the image installs the wheel (package data, no source tree at run time), and the wheel's
  package data covers every file the code opens through ``importlib.resources``.
The running proof of the wheel is tests/integration/test_wheel_install.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is a dev dependency: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ALERTMANAGER_YML = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SETTINGS = ROOT / "streams" / "settings.py"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"])


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    out = {}
    for item in value.split(","):
        name, _, rest = item.partition("://")
        host, _, port = rest.rpartition(":")
        out[name] = (host, int(port))
    return out


def test_kafka_data_is_on_its_volume(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    targets = {v.split(":")[1] for v in kafka["volumes"]}
    assert any(log_dirs == t or log_dirs.startswith(t.rstrip("/") + "/") for t in targets), (log_dirs, targets)


def test_kafka_advertises_addresses_for_containers_and_the_host(services: dict[str, Any]) -> None:
    env = services["kafka"]["environment"]
    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    assert set(advertised) <= set(listeners) and "CONTROLLER" not in advertised
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    # containers bootstrap at kafka:<port> and are then sent to what that listener advertises
    worker_bootstrap = services["worker-1"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    host, port = worker_bootstrap.rsplit(":", 1)
    internal = [n for n, (_, p) in listeners.items() if p == int(port)]
    assert internal and advertised[internal[0]] == (host, int(port)) and host in services
    # the host: a published port whose listener advertises a name the host resolves
    published = {int(p.split(":")[-1]): int(p.split(":")[0]) for p in map(str, services["kafka"]["ports"])}
    external = [n for n, (h, p) in advertised.items() if p in published and n != internal[0]]
    assert external, f"no advertised listener is published to the host: {advertised}, ports {published}"
    h, p = advertised[external[0]]
    assert re.fullmatch(r"\$\{KAFKA_EXTERNAL_HOST:-localhost\}|localhost|127\.0\.0\.1", h), h
    assert published[p] == p, "the advertised port must be the host port"


def test_workers_have_distinct_instance_ids(services: dict[str, Any]) -> None:
    workers = {n: s for n, s in services.items() if s.get("command") == ["worker"]}
    assert len(workers) >= 2
    ids = [s["environment"].get("TOUCHSTREAM_INSTANCE_ID") for s in workers.values()]
    assert all(ids) and len(set(ids)) == len(ids), ids


def _settings_variables() -> set[str]:
    doc = SETTINGS.read_text(encoding="utf-8")
    return set(re.findall(r"\b((?:TOUCHSTREAM|KAFKA|CLICKHOUSE)_[A-Z0-9_]+)\b", doc))


def test_stack_sets_only_variables_the_worker_reads(services: dict[str, Any]) -> None:
    known = _settings_variables()
    for name, svc in services.items():
        if "build" not in svc:
            continue
        for var in svc.get("environment") or {}:
            if var.startswith(("TOUCHSTREAM_", "KAFKA_", "CLICKHOUSE_")):
                assert var in known, f"{name}: {var} is not read by streams/settings.py (a stale setting)"


def test_alertmanager_secrets_come_from_mounted_files(services: dict[str, Any]) -> None:
    text = ALERTMANAGER_YML.read_text(encoding="utf-8")
    assert "${" not in text, "Alertmanager does not expand variables: a ${...} stays literal"
    cfg = yaml.safe_load(text)
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    mounted = set(services["alertmanager"].get("secrets") or [])
    declared = compose.get("secrets") or {}

    def file_fields(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k.endswith("_file") and isinstance(v, str)] + [
                x for v in node.values() for x in file_fields(v)]
        if isinstance(node, list):
            return [x for v in node for x in file_fields(v)]
        return []

    paths = file_fields(cfg)
    assert len(paths) >= 4  # pagerduty key, two slack URLs, webhook token
    for path in paths:
        m = re.fullmatch(r"/run/secrets/([a-z0-9_]+)", path)
        assert m, f"{path}: secrets are mounted under /run/secrets"
        assert m.group(1) in mounted, f"{path}: secret {m.group(1)} is not given to the alertmanager service"
        assert m.group(1) in declared and declared[m.group(1)].get("environment"), m.group(1)
    # no receiver is left with an inline key
    for receiver in cfg["receivers"]:
        for pd in receiver.get("pagerduty_configs", []):
            assert "routing_key" not in pd and "service_key" not in pd
        for sl in receiver.get("slack_configs", []):
            assert "api_url" not in sl


def test_amtool_accepts_the_alertmanager_config() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool not installed (Debian: apt-get install prometheus-alertmanager)")
    res = subprocess.run([amtool, "check-config", str(ALERTMANAGER_YML)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_image_installs_the_wheel_not_the_source_tree() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "pip wheel" in text and re.search(r"pip install /\S+\.whl", text)
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert "COPY --from=" in final_stage and "COPY schemas" not in final_stage and "COPY streams" not in final_stage


def test_package_data_covers_the_resources_the_code_opens() -> None:
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = cfg["tool"]["setuptools"]["package-data"]["streams"]
    pkg = ROOT / "streams"
    shipped = {p.relative_to(pkg) for pat in patterns for p in pkg.glob(pat) if p.is_file()}
    for needed in ("localkafka.pom.xml", "web/static/board.html", "schemas/touchpoint.v1.json"):
        assert Path(needed) in shipped, needed
    migrations = sorted((ROOT / "schemas" / "clickhouse").glob("*.sql"))
    assert migrations and all(Path("schemas/clickhouse") / m.name in shipped for m in migrations)
    contracts = sorted((ROOT / "schemas").glob("*.json"))
    assert contracts and all(Path("schemas") / c.name in shipped for c in contracts)
    # one source of truth: the package's schemas are the repository's schemas/ (a link, not a copy)
    assert (pkg / "schemas").is_symlink() and (pkg / "schemas").resolve() == (ROOT / "schemas").resolve()
