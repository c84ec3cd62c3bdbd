"""The deploy files agree with each other and with the code.

docker-compose.yml (mounted paths, Dockerfiles, depends_on, named volumes), Prometheus
(scrape targets are compose services, rule files exist, every metric and label an alert uses is
defined in streams/metrics.py), Alertmanager (routes and inhibitions name real receivers and
real alerts; critical alerts reach the pager, warnings reach chat), Grafana (datasource uids,
metric names, ClickHouse tables, and every ClickHouse panel's SQL runs on the real engine after
the migrations).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is a dev dependency: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS_YML = DEPLOY / "prometheus" / "alerts.yml"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
GRAFANA_DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yml"
GRAFANA_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARD_DIR = DEPLOY / "grafana" / "dashboards"
SCHEMA_DIR = ROOT / "schemas" / "clickhouse"

SEVERITIES = {"critical", "warning"}


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = load_yaml(COMPOSE)
    assert isinstance(doc.get("services"), dict) and doc["services"], "compose file has no services"
    return doc


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    doc = load_yaml(ALERTS_YML)
    out = [r for g in doc["groups"] for r in g["rules"]]
    assert out, "alerts.yml has no rules"
    return out


@pytest.fixture(scope="module")
def datasources() -> dict[str, dict[str, Any]]:
    doc = load_yaml(GRAFANA_DATASOURCES)
    by_uid = {d["uid"]: d for d in doc["datasources"]}
    assert len(by_uid) == len(doc["datasources"]), "duplicate datasource uid"
    return by_uid


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    files = sorted(DASHBOARD_DIR.glob("*.json"))
    assert {f.name for f in files} >= {"touchstream-operations.json", "touchstream-business.json"}
    return {f.name: json.loads(f.read_text(encoding="utf-8")) for f in files}


# --------------------------------------------------------------------------- metrics (the code side)

# Labels Prometheus attaches to every scraped series (plus the static labels of prometheus.yml).
TARGET_LABELS = {"job", "instance"}


def exposed_metrics() -> dict[str, set[str]]:
    """Every series name streams/metrics.py exposes → its label names, as prometheus-client
    renders them: counters as ``<name>_total`` (and ``_created``), histograms as ``_bucket`` (with
    ``le``) / ``_sum`` / ``_count``, gauges as is."""
    from prometheus_client import REGISTRY
    from prometheus_client.metrics import MetricWrapperBase

    import streams.metrics as m

    out: dict[str, set[str]] = {}
    objects = [o for o in vars(m).values() if isinstance(o, MetricWrapperBase)]
    assert len(objects) >= 20
    registered = set(REGISTRY._collector_to_names)  # the module's metrics are the ones being scraped
    for obj in objects:
        assert obj in registered, f"{obj} is not in the default registry, /metrics would not expose it"
        labels = set(obj._labelnames)
        for fam in obj.describe():
            if fam.type == "counter":
                out[fam.name + "_total"] = labels
                out[fam.name + "_created"] = labels
            elif fam.type == "histogram":
                out[fam.name + "_bucket"] = labels | {"le"}
                for suffix in ("_sum", "_count", "_created"):
                    out[fam.name + suffix] = labels
            elif fam.type == "summary":
                out[fam.name] = labels | {"quantile"}
                for suffix in ("_sum", "_count", "_created"):
                    out[fam.name + suffix] = labels
            else:
                out[fam.name] = labels
    return out


def test_exposed_metric_names_match_prometheus_client_rendering() -> None:
    """The suffix rules above are what prometheus-client really writes on /metrics."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    reg = CollectorRegistry()
    Counter("x_events_total", "", ["topic"], registry=reg).labels("t").inc()
    Histogram("x_latency_seconds", "", registry=reg).observe(1)
    Gauge("x_open", "", registry=reg).set(1)
    text = generate_latest(reg).decode()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert {"x_events_total", "x_latency_seconds_bucket", "x_latency_seconds_sum", "x_latency_seconds_count",
            "x_open"} <= names
    assert "x_events" not in names


# --------------------------------------------------------------------------- PromQL helpers

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                 "offset", "inf", "nan", "atan2"}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def promql_metric_names(expr: str) -> set[str]:
    s = _STRINGS.sub('""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges, subqueries, $__rate_interval
    s = _GROUPING.sub(" ", s)  # label lists
    names = set()
    for m in re.finditer(r"(?<![\w.:$])([A-Za-z_:][\w:]*)\b(?!\s*\()", s):
        if m.group(1).lower() not in _PROMQL_WORDS:
            names.add(m.group(1))
    return names


def promql_selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names in its ``{...}`` matchers) for every selector with matchers."""
    s = _STRINGS.sub('""', expr)
    out = []
    for m in re.finditer(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", s):
        out.append((m.group(1), set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", m.group(2)))))
    return out


def promql_grouping_labels(expr: str) -> set[str]:
    s = _STRINGS.sub('""', expr)
    return {lab.strip() for m in _GROUPING.finditer(s) for lab in m.group(2).split(",") if lab.strip()}


def test_promql_helpers() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, team) (rate(touchstream_x_bucket{a="b", c=~"d|e"}[5m]))) '
            '/ on (team) group_left sum(up{job="w"} offset 5m) > 1e-3 and bool count(y) or vector(1)')
    assert promql_metric_names(expr) == {"touchstream_x_bucket", "up", "y"}
    assert promql_selector_labels(expr) == [("touchstream_x_bucket", {"a", "c"}), ("up", {"job"})]
    assert promql_grouping_labels(expr) == {"le", "team"}


def check_promql(expr: str, exposed: dict[str, set[str]], target_labels: set[str], where: str) -> set[str]:
    names = promql_metric_names(expr)
    assert names, f"{where}: no metric in {expr!r}"
    series_labels: dict[str, set[str]] = {"up": set()}
    for name in names:
        assert name == "up" or name in exposed, (
            f"{where}: metric {name!r} is not exposed by streams/metrics.py (counters end in _total, "
            f"histograms in _bucket/_sum/_count)"
        )
        series_labels[name] = exposed.get(name, set()) | target_labels
    for metric, labels in promql_selector_labels(expr):
        unknown = labels - series_labels[metric]
        assert not unknown, f"{where}: {metric} has no label(s) {sorted(unknown)}"
    available = set().union(*(series_labels[n] for n in names))
    unknown = promql_grouping_labels(expr) - available
    assert not unknown, f"{where}: grouping by label(s) {sorted(unknown)} that no metric of {expr!r} has"
    for m in re.finditer(r"histogram_quantile\s*\(", expr):
        assert "_bucket" in expr[m.end():], f"{where}: histogram_quantile needs a _bucket series"
    return names


# --------------------------------------------------------------------------- docker compose


def _volume_entries(svc: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(type bind|volume, source, target) of every volume of a service (short or long syntax)."""
    for v in svc.get("volumes", []) or []:
        if isinstance(v, dict):
            yield v["type"], v.get("source", ""), v["target"]
            continue
        parts = v.split(":")
        if len(parts) == 1:  # anonymous volume
            continue
        src, dst = parts[0], parts[1]
        kind = "bind" if src.startswith((".", "/", "~", "$")) else "volume"
        yield kind, src, dst


def _depends_on(svc: dict[str, Any]) -> dict[str, str]:
    dep = svc.get("depends_on") or {}
    if isinstance(dep, list):
        return dict.fromkeys(dep, "service_started")
    return {k: (v or {}).get("condition", "service_started") for k, v in dep.items()}


def test_compose_bind_mounts_and_dockerfiles_exist(compose: dict[str, Any]) -> None:
    checked = 0
    for name, svc in compose["services"].items():
        assert "image" in svc or "build" in svc, f"{name}: neither image nor build"
        for kind, src, _ in _volume_entries(svc):
            if kind == "bind":
                host = (ROOT / src).resolve()
                assert host.exists(), f"{name}: bind-mounted {src} does not exist ({host})"
                checked += 1
        build = svc.get("build")
        if build is not None:
            if isinstance(build, str):
                build = {"context": build}
            context = (ROOT / build.get("context", ".")).resolve()
            assert context.is_dir(), f"{name}: build context {context} missing"
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
            checked += 1
    assert checked >= 7  # 3 ops config mounts + 4 worker-image builds at least


def test_compose_depends_on_and_named_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared = set(compose.get("volumes") or {})
    valid_conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, svc in services.items():
        for dep, cond in _depends_on(svc).items():
            assert dep in services, f"{name} depends on undefined service {dep!r}"
            assert dep != name
            assert cond in valid_conditions, f"{name}: unknown condition {cond!r}"
            if cond == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy: it has no healthcheck"
        for kind, src, _ in _volume_entries(svc):
            if kind == "volume":
                assert src in declared, f"{name}: named volume {src!r} is not declared under top-level volumes"
    # and the graph has no cycle (compose would refuse to start)
    state: dict[str, int] = {}

    def visit(n: str) -> None:
        assert state.get(n) != 1, f"depends_on cycle through {n}"
        if state.get(n) == 2:
            return
        state[n] = 1
        for d in _depends_on(services[n]):
            visit(d)
        state[n] = 2

    for n in services:
        visit(n)


def test_compose_ops_services(compose: dict[str, Any]) -> None:
    s = compose["services"]
    for name, port in (("prometheus", 9090), ("alertmanager", 9093), ("grafana", 3000)):
        assert name in s, f"service {name} missing"
        assert any(str(p).endswith(f":{port}") for p in s[name].get("ports", [])), f"{name}: port {port} not published"
    assert "grafana-clickhouse-datasource" in s["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    grafana_targets = {t: src for _, src, t in _volume_entries(s["grafana"])}
    assert Path(grafana_targets["/etc/grafana/provisioning"]) == Path("./deploy/grafana/provisioning")
    assert Path(grafana_targets["/var/lib/grafana/dashboards"]) == Path("./deploy/grafana/dashboards")


def _host_path(svc: dict[str, Any], container_path: str) -> Path:
    """Where a path inside the container comes from on the host (longest bind-mount prefix)."""
    best: tuple[int, Path] | None = None
    for kind, src, dst in _volume_entries(svc):
        dst = dst.rstrip("/")
        if kind == "bind" and (container_path == dst or container_path.startswith(dst + "/")):
            cand = (len(dst), ROOT / src / container_path[len(dst):].lstrip("/"))
            if best is None or cand[0] > best[0]:
                best = cand
    assert best is not None, f"{container_path} is not bind-mounted"
    return best[1].resolve()


def _flag(svc: dict[str, Any], flag: str) -> str:
    for arg in svc.get("command", []):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{flag} not set in command")


def test_mounted_configs_are_the_deploy_files(compose: dict[str, Any]) -> None:
    s = compose["services"]
    prom_cfg = _host_path(s["prometheus"], _flag(s["prometheus"], "--config.file"))
    assert prom_cfg == PROMETHEUS_YML.resolve()
    for rule_file in load_yaml(prom_cfg)["rule_files"]:  # relative to the config file's directory
        assert (prom_cfg.parent / rule_file).resolve() == ALERTS_YML.resolve()
    am_cfg = _host_path(s["alertmanager"], _flag(s["alertmanager"], "--config.file"))
    assert am_cfg == ALERTMANAGER_YML.resolve()
    assert _host_path(s["grafana"], "/etc/grafana/provisioning/datasources/datasources.yml") == \
        GRAFANA_DATASOURCES.resolve()
    for provider in load_yaml(GRAFANA_PROVIDERS)["providers"]:
        assert provider["type"] == "file"
        host_dir = _host_path(s["grafana"], provider["options"]["path"])
        assert host_dir == DASHBOARD_DIR.resolve()
        assert list(host_dir.glob("*.json")), "dashboard provider directory holds no dashboard"


def test_docker_compose_config_validates() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker CLI not installed: `docker compose config -q` cannot run here")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[0][:200]
        pytest.skip(f"docker CLI present but the compose plugin is not installed ({reason})")
    res = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "-q"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------- Prometheus


def _target_labels() -> set[str]:
    cfg = load_yaml(PROMETHEUS_YML)
    labels = set(TARGET_LABELS)
    for job in cfg["scrape_configs"]:
        for sc in job.get("static_configs", []):
            labels |= set(sc.get("labels", {}))
    return labels


def test_prometheus_scrapes_the_workers_and_alerts_to_alertmanager(compose: dict[str, Any]) -> None:
    cfg = load_yaml(PROMETHEUS_YML)
    services = compose["services"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    workers = jobs["touchstream-worker"]
    assert workers.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in workers["static_configs"] for t in sc["targets"]]
    assert sorted(targets) == ["worker-1:6066", "worker-2:6066"]
    for t in targets:
        host, port = t.split(":")
        assert host in services, f"scrape target {t}: no compose service {host}"
        env = services[host]["environment"]
        assert env["TOUCHSTREAM_WEB_PORT"] == port and env["TOUCHSTREAM_WEB_HOST"] == "0.0.0.0"
    assert cfg["rule_files"] == ["alerts.yml"]
    am = [t for a in cfg["alerting"]["alertmanagers"] for sc in a["static_configs"] for t in sc["targets"]]
    assert am == ["alertmanager:9093"] and "alertmanager" in services


def test_alert_rules_are_complete(rules: list[dict[str, Any]]) -> None:
    seen = set()
    for r in rules:
        name = r["alert"]
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", name), name
        assert isinstance(r["expr"], str) and r["expr"].strip()
        assert re.fullmatch(r"\d+[smhdw]", str(r["for"])), f"{name}: `for` missing or not a duration"
        assert r["labels"]["severity"] in SEVERITIES, f"{name}: severity"
        assert r["annotations"]["summary"].strip() and r["annotations"]["description"].strip(), name
        key = (name, r["labels"]["severity"])
        assert key not in seen, f"{key} defined twice"
        seen.add(key)
    names = {r["alert"] for r in rules}
    # the alerts issue #8 asks for
    assert {"TouchstreamWorkerDown", "TouchstreamConsumerLag", "TouchstreamDLQRateHigh", "TouchstreamSinkErrors",
            "TouchstreamSinkStuck", "TouchstreamSLABreachRateHigh", "TouchstreamSLAOldestWait",
            "TouchstreamProduceRetries"} <= names


def test_alert_rules_use_real_metrics_and_labels(rules: list[dict[str, Any]]) -> None:
    exposed = exposed_metrics()
    target_labels = _target_labels()
    used: set[str] = set()
    for r in rules:
        names = check_promql(r["expr"], exposed, target_labels, r["alert"])
        used |= names
        # annotations may only template labels the alert carries
        carried = set(_rule_labels(r))
        for text in r["annotations"].values():
            for label in re.findall(r"\$labels\.(\w+)", text):
                assert label in carried, f"{r['alert']}: $labels.{label} not among the alert's labels {sorted(carried)}"
    assert {"up", "touchstream_consumer_lag_messages", "touchstream_dlq_total", "touchstream_sink_errors_total",
            "touchstream_sink_retries_total", "touchstream_sla_events_total",
            "touchstream_sla_oldest_wait_age_seconds", "touchstream_produce_retries_total"} <= used
    breach = next(r for r in rules if r["alert"] == "TouchstreamSLABreachRateHigh")
    assert 'event="breach"' in breach["expr"]
    down = next(r for r in rules if r["alert"] == "TouchstreamWorkerDown")
    assert re.search(r"\bup\{[^}]*\}\s*==\s*0", down["expr"])


# --------------------------------------------------------------------------- Alertmanager

_MATCHER = re.compile(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')


def _matchers(items: list[str]) -> list[tuple[str, str, str]]:
    out = []
    for item in items:
        m = _MATCHER.fullmatch(item)
        assert m, f"cannot parse matcher {item!r}"
        out.append((m.group(1), m.group(2), m.group(3)))
    return out


def _matches(matchers: list[tuple[str, str, str]], labels: dict[str, str]) -> bool:
    for name, op, value in matchers:
        v = labels.get(name, "")
        ok = {"=": v == value, "!=": v != value,
              "=~": re.fullmatch(value, v) is not None, "!~": re.fullmatch(value, v) is None}[op]
        if not ok:
            return False
    return True


def _route(node: dict[str, Any], labels: dict[str, str], parent_receiver: str) -> list[str]:
    """Receivers an alert with ``labels`` reaches (Alertmanager's depth-first, first-match, continue)."""
    receiver = node.get("receiver", parent_receiver)
    hits: list[str] = []
    for child in node.get("routes", []) or []:
        if _matches(_matchers(child.get("matchers", [])), labels):
            hits += _route(child, labels, receiver)
            if not child.get("continue", False):
                break
    return hits or [receiver]


_AGGREGATIONS = re.compile(r"\b(sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)\s*"
                           r"(?:(?:by|without)\s*\([^)]*\)\s*)?\(")


def expr_output_labels(expr: str) -> set[str]:
    """Label names of the series an alert expression returns (aggregations keep their ``by``
    labels; a bare selector keeps the metric's labels plus the target labels)."""
    s = _STRINGS.sub('""', expr)
    if _AGGREGATIONS.search(s):  # the outermost (first written) `by` decides
        first = re.search(r"\bby\s*\(([^)]*)\)", s)
        return ({lab.strip() for lab in first.group(1).split(",") if lab.strip()} - {"le"}) if first else set()
    exposed = exposed_metrics()
    labels = set(_target_labels())
    for name in promql_metric_names(expr):
        labels |= exposed.get(name, set())
    return labels


def _rule_labels(r: dict[str, Any]) -> dict[str, str]:
    """An alert's labels: the expression's labels (as ``<name>`` placeholders, equal between two
    alerts only when both carry the label), the rule's static labels and ``alertname``."""
    dynamic = {label: f"<{label}>" for label in expr_output_labels(r["expr"])}
    return {**dynamic, "alertname": r["alert"], **{k: str(v) for k, v in r["labels"].items()}}


def test_alertmanager_routes(rules: list[dict[str, Any]]) -> None:
    cfg = load_yaml(ALERTMANAGER_YML)
    receivers = {r["name"]: r for r in cfg["receivers"]}
    assert len(receivers) == len(cfg["receivers"]), "duplicate receiver name"
    root = cfg["route"]
    assert {"alertname", "team"} <= set(root["group_by"])

    def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for c in node.get("routes", []) or []:
            yield from walk(c)

    for node in walk(root):
        assert node.get("receiver", root["receiver"]) in receivers
        _matchers(node.get("matchers", []))  # parse
    pager = {n for n, r in receivers.items() if r.get("pagerduty_configs") or r.get("webhook_configs")}
    chat = {n for n, r in receivers.items() if r.get("slack_configs")}
    assert pager and chat
    for r in rules:
        reached = set(_route(root, _rule_labels(r), root["receiver"]))
        if r["labels"]["severity"] == "critical":
            assert reached & pager, f"{r['alert']} (critical) does not reach a pager: {reached}"
        else:
            assert reached & chat and not reached & pager, f"{r['alert']} (warning) routed to {reached}"
    # no secret in the file: keys are read from mounted files (tests/unit/test_deploy_stack.py)
    text = ALERTMANAGER_YML.read_text(encoding="utf-8")
    assert "routing_key_file:" in text and "${" not in text
    assert not re.search(r"hooks\.slack\.com/services/T[A-Z0-9]{6,}", text)


def _inhibits(cfg: dict[str, Any], source: dict[str, str], target: dict[str, str]) -> bool:
    """Whether a firing ``source`` alert mutes ``target`` (labels missing on both sides are equal)."""
    return any(
        _matches(_matchers(r["source_matchers"]), source) and _matches(_matchers(r["target_matchers"]), target)
        and all(source.get(label, "") == target.get(label, "") for label in r.get("equal", []))
        for r in cfg["inhibit_rules"]
    )


def test_alertmanager_inhibitions_name_real_alerts(rules: list[dict[str, Any]]) -> None:
    cfg = load_yaml(ALERTMANAGER_YML)
    labelled = [_rule_labels(r) for r in rules]
    for rule in cfg["inhibit_rules"]:
        assert any(_matches(_matchers(rule["source_matchers"]), lab) for lab in labelled), f"no source: {rule}"
        assert any(_matches(_matchers(rule["target_matchers"]), lab) for lab in labelled), f"no target: {rule}"
    by_name: dict[str, list[dict[str, str]]] = {}
    for lab in labelled:
        by_name.setdefault(lab["alertname"], []).append(lab)
    worker_down = by_name["TouchstreamWorkerDown"][0]
    # worker down mutes every lag alert (the equal labels are static on both rules) ...
    for lag in by_name["TouchstreamConsumerLag"]:
        assert _inhibits(cfg, worker_down, lag), f"TouchstreamWorkerDown does not inhibit {lag}"
    # ... but nothing unrelated
    for name in ("TouchstreamSinkStuck", "TouchstreamDLQRateHigh", "TouchstreamSLABreachRateHigh"):
        for lab in by_name[name]:
            assert not _inhibits(cfg, worker_down, lab), f"TouchstreamWorkerDown would mute {name}"
    # the critical threshold of an alert mutes its warning threshold
    for name in ("TouchstreamConsumerLag", "TouchstreamSLAOldestWait"):
        sev = {lab["severity"]: lab for lab in by_name[name]}
        assert set(sev) == SEVERITIES, name
        assert _inhibits(cfg, sev["critical"], sev["warning"]) and not _inhibits(cfg, sev["warning"], sev["critical"])


# --------------------------------------------------------------------------- Grafana


def test_grafana_datasources(compose: dict[str, Any], datasources: dict[str, dict[str, Any]]) -> None:
    services = compose["services"]
    prom = datasources["touchstream-prometheus"]
    assert prom["type"] == "prometheus" and prom["url"] == "http://prometheus:9090"
    chs = datasources["touchstream-clickhouse"]
    assert chs["type"] == "grafana-clickhouse-datasource"
    jd = chs["jsonData"]
    assert (jd["host"], jd["port"], jd["protocol"]) == ("clickhouse", 8123, "http")
    ch_env = services["clickhouse"]["environment"]
    assert jd["username"] == ch_env["CLICKHOUSE_USER"] == "touchstream"
    assert chs["secureJsonData"]["password"] == ch_env["CLICKHOUSE_PASSWORD"]
    assert jd["defaultDatabase"] == ch_env["CLICKHOUSE_DB"] == "touchstream"
    assert jd["host"] in services and "prometheus" in services


def _panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])  # collapsed rows keep their panels inside


def test_dashboards_are_valid_grafana_json(dashboards: dict[str, dict[str, Any]],
                                           datasources: dict[str, dict[str, Any]]) -> None:
    uids = set()
    for fname, d in dashboards.items():
        assert 36 <= d["schemaVersion"] <= 41, fname
        assert d["uid"] and d["uid"] not in uids and len(d["uid"]) <= 40
        uids.add(d["uid"])
        assert d["title"]
        ids: set[int] = set()
        cells: set[tuple[int, int]] = set()
        data_panels = 0
        for p in _panels(d):
            assert isinstance(p["id"], int) and p["id"] not in ids, f"{fname}: panel id {p['id']}"
            ids.add(p["id"])
            g = p["gridPos"]
            assert all(isinstance(g[k], int) for k in "hwxy") and g["w"] > 0 and g["h"] > 0
            assert g["x"] + g["w"] <= 24, f"{fname}: {p['title']} wider than the grid"
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{fname}: {p['title']} overlaps another panel"
                    cells.add((x, y))
            if p["type"] == "row":
                continue
            data_panels += 1
            assert p["targets"], f"{fname}: {p['title']} has no query"
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs))
            for ds in [p["datasource"]] + [t["datasource"] for t in p["targets"]]:
                assert ds["uid"] in datasources, f"{fname}: {p['title']} uses unprovisioned uid {ds['uid']}"
                assert ds["type"] == datasources[ds["uid"]]["type"]
        assert data_panels >= 8, fname
        for var in d.get("templating", {}).get("list", []):
            if "datasource" in var:
                assert var["datasource"]["uid"] in datasources


def test_operations_dashboard_queries_real_metrics(dashboards: dict[str, dict[str, Any]]) -> None:
    exposed = exposed_metrics()
    target_labels = _target_labels()
    used: set[str] = set()
    titles = []
    for p in _panels(dashboards["touchstream-operations.json"]):
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "touchstream-prometheus"
            used |= check_promql(t["expr"], exposed, target_labels, p["title"])
            titles.append(p["title"])
    for name in ("touchstream_events_in_total", "touchstream_events_out_total", "touchstream_dlq_total",
                 "touchstream_event_latency_seconds_bucket", "touchstream_append_to_processed_seconds_bucket",
                 "touchstream_consumer_lag_messages", "touchstream_sink_rows_total", "touchstream_sink_errors_total",
                 "touchstream_sink_retries_total", "touchstream_open_sessions", "touchstream_sla_open_waits",
                 "touchstream_open_anomalies", "touchstream_sla_oldest_wait_age_seconds"):
        assert name in used, f"operations dashboard shows no {name}"
    exprs = [t["expr"] for p in _panels(dashboards["touchstream-operations.json"]) for t in p.get("targets", [])]
    assert any("histogram_quantile(0.5," in e for e in exprs) and any("histogram_quantile(0.99," in e for e in exprs)


def clickhouse_objects() -> set[str]:
    names = set()
    for f in sorted(SCHEMA_DIR.glob("*.sql")):
        names |= set(re.findall(r"CREATE\s+(?:TABLE|VIEW|MATERIALIZED\s+VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?"
                                r"\{db\}\.(\w+)", f.read_text(encoding="utf-8"), flags=re.I))
    return names


def _ch_queries(dashboards: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for d in dashboards.values():
        for p in _panels(d):
            for t in p.get("targets", []):
                if t["datasource"]["type"] == "grafana-clickhouse-datasource":
                    out.append((p["title"], t["rawSql"]))
        for var in d.get("templating", {}).get("list", []):
            if var.get("datasource", {}).get("type") == "grafana-clickhouse-datasource":
                out.append((f"variable {var['name']}", var["query"]))
    return out


def test_business_dashboard_reads_real_tables(dashboards: dict[str, dict[str, Any]],
                                              datasources: dict[str, dict[str, Any]]) -> None:
    objects = clickhouse_objects()
    assert {"touchpoints", "sessions", "sla_events", "response_times", "funnel_minute", "funnel_hourly",
            "anomalies"} <= objects
    db = datasources["touchstream-clickhouse"]["jsonData"]["defaultDatabase"]
    queries = _ch_queries(dashboards)
    assert len(queries) >= 8
    used = set()
    for title, sql in queries:
        refs = re.findall(r"\b(?:FROM|JOIN)\s+([A-Za-z_][\w.]*)", sql, flags=re.I)
        assert refs, f"{title}: no FROM"
        for ref in refs:
            schema, _, table = ref.rpartition(".")
            assert schema in ("", db), f"{title}: {ref} is not in database {db}"
            assert table in objects, f"{title}: {ref} is not a table/view in schemas/clickhouse"
            used.add(table)
    assert {"touchpoints", "funnel_hourly", "response_times", "sla_events", "anomalies", "sessions"} <= used


# ---- run every ClickHouse panel on the embedded engine (migrations applied by the `ch` fixture)

def expand_grafana_sql(sql: str, db: str, dash: dict[str, Any], frm: int, to: int, interval_s: int = 60) -> str:
    """Grafana variables + the ClickHouse plugin's macros (grafana/clickhouse-datasource pkg/macros)."""
    for var in dash.get("templating", {}).get("list", []):
        for form in (f"${{{var['name']}:singlequote}}", f"${{{var['name']}}}", f"${var['name']}"):
            sql = sql.replace(form, "'acme'")
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 >= toDateTime({frm}) AND \1 <= toDateTime({to})", sql)
    sql = re.sub(r"\$__timeInterval\(([^)]+)\)", rf"toStartOfInterval(toDateTime(\1), INTERVAL {interval_s} second)",
                 sql)
    sql = sql.replace("$__fromTime", f"toDateTime({frm})").replace("$__toTime", f"toDateTime({to})")
    assert "$" not in sql, f"unexpanded macro or variable in {sql}"
    return re.sub(r"\btouchstream\.", f"{db}.", sql)


def _enriched(i: int, stage: str, person: str, ts_ms: int) -> dict[str, Any]:
    iso = datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return {"event_id": f"e{i}", "tenant_id": "acme", "occurred_at": iso, "channel": "web", "type": "page_view",
            "identities": {"anonymous_id": person}, "campaign": {"name": "spring"}, "person_id": person,
            "session_id": f"s_{person}", "session_seq": 1, "stage": stage,
            "source": {"topic": "touchpoints.raw", "partition": 0, "offset": i}}


def test_clickhouse_panels_run_on_the_migrated_schema(ch: Any, dashboards: dict[str, dict[str, Any]]) -> None:
    from streams.clickhouse.rows import SPECS

    now = int(time.time())
    spec = next(s for s in SPECS if s.table == "touchpoints")
    # 4 persons see an impression, 2 of them click, 1 visits
    recs = [_enriched(i, "impression", f"p{i}", (now - 600) * 1000) for i in range(4)]
    recs += [_enriched(10 + i, "click", f"p{i}", (now - 590) * 1000) for i in range(2)]
    recs += [_enriched(20, "visit", "p0", (now - 580) * 1000)]
    ch.insert("touchpoints", [spec.to_row(r) for r in recs], spec.columns)

    ran = 0
    for d in dashboards.values():
        for p in _panels(d):
            for t in p.get("targets", []):
                if t["datasource"]["type"] != "grafana-clickhouse-datasource":
                    continue
                sql = expand_grafana_sql(t["rawSql"], ch.db, d, now - 86400, now + 3600)
                try:
                    rows = ch.query(sql)
                except Exception as exc:
                    raise AssertionError(f"panel {p['title']!r} fails on ClickHouse: {exc}\n{sql}") from exc
                ran += 1
                if p["title"].startswith("Funnel: cohort conversion per stage"):  # docs/funnel.md
                    assert [(r[1], r[3], r[5]) for r in rows] == [("impression", 4, 0.5), ("click", 2, 0.5),
                                                                  ("visit", 1, 0.0)]
                    assert [r[7] for r in rows] == [None, 0, 0]  # nobody skipped a stage
        for var in d.get("templating", {}).get("list", []):
            if var.get("datasource", {}).get("type") == "grafana-clickhouse-datasource":
                ch.query(expand_grafana_sql(var["query"], ch.db, d, now - 86400, now))
                ran += 1
    assert ran == len(_ch_queries(dashboards))
