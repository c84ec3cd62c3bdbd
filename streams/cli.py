"""``touchstream`` command line: every entry point of the product.

Layout, so a command is added in one place: ``cmd_<name>`` does the work, ``add_<name>`` declares
its flags (each with help), a description, examples and the environment variables it reads
(:func:`_command`; the meanings come from the table in :mod:`streams.settings`), and
:data:`COMMANDS` lists the ``add_`` functions in the order ``--help`` shows them.

Expected failures end in one line on stderr that says what to do, with exit code 1: a missing
file, the web port in use, a broker that cannot be reached or refuses the credentials, a bad
setting or SLA policy file, ClickHouse without tables or held by a running worker. They raise
:class:`CliError` (or a library's own error that :func:`_explain` knows); ``--debug`` shows the
traceback instead. An exception nobody expected keeps its traceback: it is a bug report.
``touchstream query ... | head`` ends quietly (exit 141, like a tool killed by SIGPIPE).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from streams.settings import Settings

#: the simulator's tenants (streams/devtools/simulate.py), used in every example
TENANTS = ("acme-shop", "northwind-b2b", "globex-travel")
EXIT_FAILURE = 1
EXIT_BROKEN_PIPE = 141

# ----------------------------------------------------------------------------- environment, per command

KAFKA_ENV = ("KAFKA_BOOTSTRAP_SERVERS", "TOUCHSTREAM_KAFKA_PORT", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM",
             "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CAFILE", "TOUCHSTREAM_TOPIC_PREFIX")
TOPIC_ENV = ("TOUCHSTREAM_PARTITIONS", "TOUCHSTREAM_REPLICATION")
CLICKHOUSE_ENV = ("TOUCHSTREAM_DATA_DIR", "CLICKHOUSE_URL", "CLICKHOUSE_DATABASE")
CORE_ENV = ("TOUCHSTREAM_MAX_FUTURE_S", "TOUCHSTREAM_DEDUP_WINDOW_S", "TOUCHSTREAM_SESSION_GAP_S",
            "TOUCHSTREAM_ALLOWED_LATENESS_S", "TOUCHSTREAM_IDLE_ADVANCE_S", "TOUCHSTREAM_FUNNEL_WINDOW_S",
            "TOUCHSTREAM_SLA_POLICIES", "TOUCHSTREAM_RULES_DIR", "TOUCHSTREAM_ATTRIBUTION_LOOKBACK_DAYS",
            "TOUCHSTREAM_NOTIFIERS_FILE", "TOUCHSTREAM_NOTIFIERS",
            "TOUCHSTREAM_PSEUDONYMISE", "TOUCHSTREAM_PSEUDONYM_SALT", "TOUCHSTREAM_PSEUDONYM_TYPES")
#: variables read outside streams/settings.py (the module that reads each says why)
EXTRA_ENV = {
    "TOUCHSTREAM_RAW_TTL_DAYS": "days raw touchpoints are kept (ClickHouse TTL, set by the first migrate; "
                                "default: 400)",
    "TOUCHSTREAM_KAFKA_VERSION": "Kafka version of the local broker's jars (default: 4.1.2)",
}


def _env_docs() -> dict[str, str]:
    """Variable → "meaning (default: x)", from the table in the docstring of streams/settings.py."""
    from streams import settings as settings_module

    out: dict[str, str] = dict(EXTRA_ENV)
    for line in (settings_module.__doc__ or "").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) != 3 or cells[0] == "variable":
            continue
        names = [n.strip() for n in cells[0].split(" / ")]
        defaults = [d.strip() for d in cells[1].split(" / ")]
        meaning = cells[2].replace("``", "")
        for i, name in enumerate(names):
            default = (defaults[i] if len(defaults) == len(names) else cells[1]).replace("``", "")
            out[name] = f"{meaning} (default: {default})" if default not in ("–", "-") else meaning
    return out


# ----------------------------------------------------------------------------- errors


class CliError(Exception):
    """An expected failure; the message is the one line the user reads (what happened, what to do)."""


def _explain(exc: BaseException) -> str | None:
    """The one line for an expected failure, or None for a bug (whose traceback is the report)."""
    from aiokafka.errors import KafkaConnectionError
    from clickhouse_connect.driver.exceptions import OperationalError

    from streams.app.worker import ConfigError
    from streams.kafka_admin import BrokerUnreachable
    from streams.localkafka import KafkaLaunchError
    from streams.notify import NotifierError
    from streams.web.server import PortInUse

    if isinstance(exc, CliError | BrokerUnreachable | KafkaLaunchError | ConfigError | PortInUse | NotifierError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, KafkaConnectionError):
        return f"lost the connection to Kafka ({exc}); check that the broker runs (`touchstream status`)"
    if isinstance(exc, OperationalError):
        from streams.clickhouse.client import redact

        url = redact(os.environ.get("CLICKHOUSE_URL", "")) or "(CLICKHOUSE_URL)"
        return f"cannot reach ClickHouse at {url}: {str(exc).splitlines()[0][:200]}; check CLICKHOUSE_URL"
    return None


def _settings(args: argparse.Namespace) -> Settings:
    if getattr(args, "data_dir", None):
        os.environ["TOUCHSTREAM_DATA_DIR"] = str(args.data_dir)
    try:
        return Settings.from_env()
    except ValueError as exc:  # the message names the variable
        raise CliError(f"configuration: {exc}") from exc


def _progress(args: argparse.Namespace, label: str, **kw: Any) -> Any:
    """The shared reporter (streams/progress.py) on stderr, silent with ``--quiet``."""
    from streams.progress import Progress

    return Progress(label, enabled=not getattr(args, "quiet", False), **kw)


def _need_file(path: str | Path, what: str, hint: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise CliError(f"{what} {p} {'is not a file' if p.exists() else 'not found'}: {hint}")
    return p


def _check_broker(s: Settings) -> None:
    from streams.kafka_admin import check_broker

    asyncio.run(check_broker(s))


# ----------------------------------------------------------------------------- ClickHouse access


def _engine_path(s: Settings) -> Path | None:
    url = s.clickhouse_url
    if not url.startswith("chdb:"):
        return None
    return Path(url[len("chdb://"):] if url.startswith("chdb://") else url[5:])


def engine_holder(path: Path) -> int | None:
    """PID of the process holding the embedded engine at ``path`` (0 if unknown), None if free.

    The engine is one process (it locks ``<path>/status``); a second one cannot open it, and chdb
    says so with an initialisation error plus a native message on stderr that we cannot silence.
    So commands look at the lock first and say "busy"."""
    import fcntl

    status = path / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(status).read_text().splitlines():
                if line.startswith("PID:"):
                    return int(line.split(":", 1)[1])
        return 0
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _busy_message(s: Settings, pid: int) -> str:
    who = f"process {pid}" if pid else "another process"
    return (f"busy: the embedded ClickHouse ({_engine_path(s)}) is in use by {who}, a running `touchstream run` or "
            f"worker (the engine is one process); see its board at {_web_url(s)}/board, or stop it first")


def _clickhouse(s: Settings) -> Any:
    """A ClickHouse client, after checking that the embedded engine is free."""
    from streams.clickhouse.client import ClickHouse

    path = _engine_path(s)
    if path is not None and (pid := engine_holder(path)) is not None:
        raise CliError(_busy_message(s, pid))
    return ClickHouse(s.clickhouse_url, s.clickhouse_database)


def _web_url(s: Settings) -> str:
    host = "127.0.0.1" if s.web_host in ("0.0.0.0", "::", "") else s.web_host
    return f"http://{host}:{s.web_port}"


def _check_web_port(s: Settings) -> None:
    """Fail before anything starts (Kafka, history) if the worker's web port is taken."""
    with socket.socket(socket.AF_INET6 if ":" in s.web_host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((s.web_host, s.web_port))
        except OSError as exc:
            raise CliError(f"cannot serve on {s.web_host}:{s.web_port} ({exc.strerror}): set TOUCHSTREAM_WEB_PORT "
                           "to a free port") from exc


# ----------------------------------------------------------------------------- kafka


def cmd_kafka(args: argparse.Namespace) -> int:
    from streams.localkafka import LocalKafka

    s = _settings(args)
    if args.action == "start":
        k = LocalKafka(s.kafka_dir, nodes=args.nodes, base_port=s.kafka_port, secure=args.secure)
        print(f"starting Kafka ({args.nodes} node(s){', SASL_SSL + SCRAM-SHA-512' if args.secure else ''}) "
              f"under {s.kafka_dir} ...", flush=True)
        bootstrap = k.start()
        print(f"Kafka ready: KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
        if args.secure:
            print(f"client settings (password included): {s.kafka_dir / 'client.env'}; "
                  f"use them with: set -a; . {s.kafka_dir / 'client.env'}; set +a")
    else:
        k = LocalKafka.from_state(s.kafka_dir) or LocalKafka(s.kafka_dir, base_port=s.kafka_port)
        k.stop()
        print("Kafka stopped")
    return 0


def add_kafka(sub: Any) -> None:
    k = _command(sub, "kafka", cmd_kafka, "start/stop the local Kafka (KRaft, Maven-resolved jars)",
                 "Start or stop the project's own Apache Kafka broker(s) on 127.0.0.1: the jars are resolved "
                 "once with Maven into the data dir, each node is one JVM in combined broker+controller mode.",
                 ["touchstream kafka start", "touchstream kafka start --nodes 3", "touchstream kafka stop",
                  "touchstream --data-dir .secure kafka start --secure && set -a && . .secure/kafka/client.env"],
                 ("TOUCHSTREAM_DATA_DIR", "TOUCHSTREAM_KAFKA_PORT", "TOUCHSTREAM_KAFKA_VERSION"))
    k.add_argument("action", choices=["start", "stop"], help="start (idempotent) or stop the local broker(s)")
    k.add_argument("--nodes", type=int, choices=[1, 3], default=1, help="1 broker, or a 3-node cluster (default 1)")
    k.add_argument("--secure", action="store_true",
                   help="SASL_SSL with SCRAM-SHA-512, a CA and broker certificate made at the first start; "
                        "the client settings are written to <data dir>/kafka/client.env (a data dir keeps the "
                        "mode it was first started with: `touchstream kafka stop` then a new --data-dir to change)")
    _data_dir_flag(k)


# ----------------------------------------------------------------------------- migrate


def cmd_migrate(args: argparse.Namespace) -> int:
    from streams.clickhouse.client import redact
    from streams.clickhouse.migrate import load, migrate

    s = _settings(args)
    if args.cluster_ddl:
        from streams.clickhouse.cluster import cluster_ddl

        print(cluster_ddl(args.cluster_ddl, s.clickhouse_database), end="")
        return 0
    ch = _clickhouse(s)
    total = len(load())
    try:
        with _progress(args, "migrate", unit="statements") as progress:
            applied = migrate(ch, progress=progress)
    finally:
        ch.close()
    print(f"ClickHouse {redact(s.clickhouse_url)} database {ch.db}: "
          f"{len(applied)} applied ({', '.join(applied) or 'none'}), {total - len(applied)} already up to date")
    return 0


def add_migrate(sub: Any) -> None:
    mg = _command(sub, "migrate", cmd_migrate, "apply ClickHouse migrations",
                  "Create or upgrade the ClickHouse tables (versioned, idempotent: applied migrations are "
                  "recorded and skipped). The worker runs this itself at start; run it alone before a deploy.",
                  ["touchstream migrate",
                   "CLICKHOUSE_URL=http://user:pass@clickhouse:8123/touchstream touchstream migrate",
                   "touchstream migrate --cluster-ddl analytics > cluster.sql"],
                  (*CLICKHOUSE_ENV, "TOUCHSTREAM_RAW_TTL_DAYS"), quiet=True)
    mg.add_argument("--cluster-ddl", metavar="CLUSTER",
                    help="print the replicated + Distributed DDL for this ClickHouse cluster instead of applying")


# ----------------------------------------------------------------------------- worker / run


def _prepare(s: Settings) -> None:
    from streams.app import topics
    from streams.clickhouse.migrate import migrate

    _check_broker(s)
    asyncio.run(topics.ensure_all(s))
    if s.role != "process":  # a processing-only worker never opens ClickHouse (the embedded engine is 1 process)
        ch = _clickhouse(s)
        try:
            migrate(ch)
        finally:
            ch.close()


def _start_worker(s: Settings, extra_tasks: list[Any] | None = None, log_format: str | None = None,
                  log_level: str | None = None) -> int:
    from streams.app.worker import run
    from streams.logs import setup

    setup(log_format or s.log_format, log_level or s.log_level, _secrets(s))
    return run(s, extra_tasks)


def _secrets(s: Settings) -> list[str]:
    """Values that must never reach a log line (see streams.logs.Redact)."""
    from streams.notify import NotifierError, notifier_urls

    found = [x for x in (s.kafka_sasl_password, s.web_token, s.pseudonym_salt) if x]
    with contextlib.suppress(NotifierError):
        found += list(notifier_urls(os.environ).values())
    return found


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.app.worker import pipeline_config

    s = _settings(args)
    if s.role != "sink":
        pipeline_config(s)  # a bad SLA policy or notifier file: one line, before any connection
    _prepare(s)
    return _start_worker(s)


def add_worker(sub: Any) -> None:
    from streams import settings as settings_module

    every = [v for v in _env_docs() if v in (settings_module.__doc__ or "")]
    _command(sub, "worker", cmd_worker, "run the stream worker",
             "The stream worker: validates touchpoints.raw, runs the core (identity, sessions, SLA clocks, "
             "funnel, anomaly detection), produces the output topics and writes ClickHouse. Which stages run "
             "is TOUCHSTREAM_ROLE; several workers share the partitions (consumer groups). Serves /health, "
             "/ready, /metrics and the board on TOUCHSTREAM_WEB_HOST:TOUCHSTREAM_WEB_PORT. It reads every "
             "variable of streams/settings.py.",
             ["KAFKA_BOOTSTRAP_SERVERS=kafka:9092 CLICKHOUSE_URL=http://ch:8123/touchstream touchstream worker",
              "TOUCHSTREAM_ROLE=process TOUCHSTREAM_INSTANCE_ID=worker-1 touchstream worker"],
             tuple(every))


def _history_hint(history: Any) -> str:
    t = history.loaded.tables
    return (f"{history.events:,} events → {t.get('sessions').rows if 'sessions' in t else 0:,} sessions, "
            f"{t['response_times'].rows if 'response_times' in t else 0:,} replies, "
            f"{t['funnel_minute'].rows if 'funnel_minute' in t else 0:,} funnel rows, "
            f"{history.anomalies} anomaly records, in {history.seconds:.1f}s")


def _history_span_ms(args: argparse.Namespace) -> int:
    from streams.clickhouse.queries import parse_since

    if args.history.strip() in ("0", ""):
        return 0
    try:
        return parse_since(args.history) * 1000
    except ValueError as exc:
        raise CliError(f"--history must look like 2h, 90m or 0 (none), got {args.history!r}") from exc


def _load_history(s: Settings, config: Any, args: argparse.Namespace, span_ms: int) -> None:
    from streams.clickhouse.backfill import history_window, load_history

    if span_ms <= 0:
        return
    ch = _clickhouse(s)
    try:
        window = history_window(ch, int(time.time() * 1000), span_ms, s.funnel_window_ms)
        if window is None:
            print("[run] history: ClickHouse already holds data up to now, nothing to add", flush=True)
            return
        start, end = window
        print(f"[run] loading {(end - start) / 3_600_000:.1f} h of simulated history "
              f"({args.history_rate:g} events/s, seed {args.seed + 1}) into ClickHouse ...", flush=True)
        history = load_history(ch, config, window, args.history_rate, args.seed + 1)
    finally:
        ch.close()
    print(f"[run] history: {_history_hint(history)}", flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from streams.app.worker import pipeline_config
    from streams.localkafka import LocalKafka

    s = _settings(args)
    config = pipeline_config(s)  # a bad SLA policy file: one line, before Kafka is started
    history_ms = _history_span_ms(args)
    _check_web_port(s)
    path = _engine_path(s)
    if path is not None and (pid := engine_holder(path)) is not None:
        raise CliError(_busy_message(s, pid))
    started: LocalKafka | None = None
    if s.kafka_bootstrap is None:
        local = LocalKafka(s.kafka_dir, nodes=1, base_port=s.kafka_port)
        if not any(local.running(n) for n in local.nodes):  # never stop a broker someone else started
            started = local
            print(f"[run] starting local Kafka under {s.kafka_dir} (first time: Maven fetches the jars) ...",
                  flush=True)
        local.start()
    try:
        _prepare(s)
        _load_history(s, config, args, history_ms)
        web = _web_url(s)
        print(f"[run] Kafka {s.bootstrap}, ClickHouse {s.clickhouse_url}, feed {args.rate:g}/s; Ctrl-C stops",
              flush=True)
        print(f"[run] board    {web}/board", flush=True)
        print(f"[run] metrics  {web}/metrics (Prometheus text), readiness {web}/ready"
              + (" (Authorization: Bearer $TOUCHSTREAM_WEB_TOKEN)" if s.web_token else ""), flush=True)
        print("[run] answers  touchstream query funnel|sla|sessions|anomalies (after this run stops: "
              "the embedded ClickHouse is one process)", flush=True)
        tasks = [_feed(args), _summary(args.duration)]
        # the [run] lines are the report: library INFO logs would drown them
        return _start_worker(s, tasks, log_format="human",
                             log_level=os.environ.get("TOUCHSTREAM_LOG_LEVEL") or "warning")
    finally:
        if started is not None:
            print("[run] stopping local Kafka", flush=True)
            started.stop()


def add_run(sub: Any) -> None:
    r = _command(sub, "run", cmd_run, "local Kafka + embedded ClickHouse + worker + simulated feed",
                 "Everything on one machine: starts the local Kafka (unless KAFKA_BOOTSTRAP_SERVERS is set), "
                 "migrates the embedded ClickHouse, loads the last hours of simulated history through the "
                 "offline core (so the board, query and Grafana have something to show at once), then runs "
                 "the worker with a live simulated feed. Prints the board and metrics URLs and a summary "
                 "every 5 s. The local broker it started is stopped at the end.",
                 ["touchstream run", "touchstream run --duration 120 --rate 50",
                  "touchstream run --history 0            # no history, live feed only",
                  "TOUCHSTREAM_WEB_PORT=6070 touchstream run"],
                 (*KAFKA_ENV, *TOPIC_ENV, *CLICKHOUSE_ENV, "TOUCHSTREAM_WEB_HOST", "TOUCHSTREAM_WEB_PORT",
                  "TOUCHSTREAM_WEB_TOKEN", "TOUCHSTREAM_LOG_LEVEL", *CORE_ENV))
    r.add_argument("--duration", type=float, default=None, help="seconds, then stop everything (default: until Ctrl-C)")
    r.add_argument("--rate", type=float, default=100.0, help="simulated live events per second (default 100)")
    r.add_argument("--seed", type=int, default=1, help="seed of the live feed; the history uses seed + 1 (default 1)")
    r.add_argument("--history", default="2h", metavar="SPAN",
                   help="simulated history loaded before the live feed starts: 2h, 90m, 0 for none (default 2h); "
                        "on a data dir that already has data, only the gap since its newest event")
    r.add_argument("--history-rate", type=float, default=2.5, metavar="EV_PER_S",
                   help="events/s of the history: thin, so it loads in seconds (default 2.5)")
    _data_dir_flag(r)


def _feed(args: argparse.Namespace) -> Any:
    async def feed(rt: Any) -> None:
        from aiokafka import AIOKafkaProducer

        from streams.app import topics
        from streams.devtools.simulate import SimConfig, stream_live
        from streams.kafka_admin import client_kwargs

        producer = AIOKafkaProducer(
            bootstrap_servers=rt.settings.bootstrap, linger_ms=5, acks="all", enable_idempotence=True,
            **client_kwargs(rt.settings),
        )
        try:
            await producer.start()
            cfg = SimConfig(rate=args.rate, duration_s=args.duration or 10 ** 9, seed=args.seed,
                            start_ms=int(time.time() * 1000))

            class FeedStopped(Exception):
                pass

            async def send(key: bytes, value: bytes) -> None:
                if rt.stats.get("feed_stop"):
                    raise FeedStopped
                await producer.send(rt.settings.topic(topics.RAW), value=value, key=key)
                rt.stats["fed_sent"] = rt.stats.get("fed_sent", 0) + 1

            with contextlib.suppress(FeedStopped):
                await stream_live(cfg, send)
            await producer.flush()
        finally:
            await producer.stop()

    return feed


def _summary(duration: float | None) -> Any:
    async def summary(rt: Any) -> None:
        from streams.app import topics

        started = time.monotonic()
        last_in, last_t = 0, started
        while True:
            await asyncio.sleep(5.0)
            now = time.monotonic()
            n_in = rt.stats.get("raw_in", 0)
            rate = (n_in - last_in) / (now - last_t)
            last_in, last_t = n_in, now
            print(
                f"[run] t={now - started:5.0f}s  in={n_in} ({rate:,.0f} ev/s)  dlq={rt.stats.get('dlq', 0)}  "
                f"enriched={rt.stats.get(topics.ENRICHED, 0)}  sessions={rt.stats.get(topics.SESSIONS, 0)}  "
                f"sla={rt.stats.get(topics.SLA_EVENTS, 0)}  anomalies={rt.stats.get(topics.ANOMALIES, 0)}  "
                f"clickhouse.touchpoints={await _rows(rt)}",
                flush=True,
            )
            if duration and now - started >= duration:
                await _drain(rt)
                rt.request_stop()
                return

    return summary


async def _rows(rt: Any) -> Any:
    try:
        return await rt.clickhouse.run(rt.clickhouse.count, "touchpoints", False)
    except Exception as exc:  # show the problem, keep the run going
        return f"? ({type(exc).__name__})"


async def _drain(rt: Any, timeout: float = 30.0) -> None:
    """Stop the feed, then wait until what was fed is enriched and in ClickHouse (bounded)."""
    from streams.app import topics

    rt.stats["feed_stop"] = 1
    deadline = time.monotonic() + timeout
    last_enriched = -1
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        fed, seen = rt.stats.get("fed_sent", 0), rt.stats.get("raw_in", 0)
        enriched = rt.stats.get(topics.ENRICHED, 0)
        if seen >= fed and enriched == last_enriched and rt.stats.get("ch_touchpoints", 0) >= enriched:
            break
        last_enriched = enriched
    print(f"[run] drained: fed={rt.stats.get('fed_sent', 0)} enriched={rt.stats.get(topics.ENRICHED, 0)} "
          f"dlq={rt.stats.get('dlq', 0)} clickhouse.touchpoints={await _rows(rt)}", flush=True)


# ----------------------------------------------------------------------------- simulate


def cmd_simulate(args: argparse.Namespace) -> int:
    from streams.devtools import simulate

    start_ms = int(args.start_ms) if args.start_ms is not None else int(time.time() * 1000)
    cfg = simulate.SimConfig(rate=args.rate, duration_s=args.duration, seed=args.seed, start_ms=start_ms)
    if args.out == "kafka":
        s = _settings(args)
        _check_broker(s)
    if args.truth:
        Path(args.truth).write_bytes(orjson.dumps(simulate.truth(cfg), option=orjson.OPT_INDENT_2))
    if args.costs:
        Path(args.costs).write_text(simulate.cost_feed(cfg), encoding="utf-8")
    if args.out == "kafka":
        with _progress(args, "simulate", unit="events") as progress:
            return asyncio.run(_simulate_kafka(s, cfg, progress))
    t0 = time.monotonic()
    with _progress(args, "simulate", unit="messages") as progress:
        n = _simulate_file(cfg, args.out, args.noise, args.seed, progress)
    print(f"wrote {n} messages to {args.out} in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


def add_simulate(sub: Any) -> None:
    sm = _command(sub, "simulate", cmd_simulate, "seeded realistic touchpoints, with injected incidents",
                  f"A seeded, realistic multi-tenant feed ({', '.join(TENANTS)}) with injected, recorded "
                  "incidents (a landing page outage, broken tracking, a silent support team). To a JSON-lines "
                  "file (as fast as it goes) or to Kafka (paced to the wall clock).",
                  ["touchstream simulate --rate 200 --duration 600 --seed 7 --out feed.jsonl --truth truth.json",
                   "touchstream simulate --duration 3600 --out feed.jsonl --costs costs.csv && "
                   "touchstream costs load costs.csv",
                   "touchstream simulate --rate 50 --duration 60 --out kafka",
                   "touchstream simulate --duration 300 --noise 0.05 --out noisy.jsonl   # DLQ demo"],
                  (*KAFKA_ENV, *TOPIC_ENV), quiet=True)
    sm.add_argument("--rate", type=float, default=100.0, help="mean events per second (default 100)")
    sm.add_argument("--duration", type=float, default=600.0, help="seconds of event time (default 600)")
    sm.add_argument("--seed", type=int, default=1, help="random seed: the same seed gives the same bytes (default 1)")
    sm.add_argument("--out", default="kafka", help="'kafka' (paced live to touchpoints.raw) or a .jsonl path")
    sm.add_argument("--truth", help="write the injected incidents here (JSON), for `touchstream evaluate`")
    sm.add_argument("--costs", metavar="FILE",
                    help="write the run's cost feed here (CSV: what campaigns paid outside the events' costs), "
                         "for `touchstream costs load`")
    sm.add_argument("--start-ms", help="event time of the first event, epoch ms (default: now)")
    sm.add_argument("--noise", type=float, default=0.0,
                    help="file output: fraction of events followed by a malformed copy (DLQ demo)")


def _simulate_file(cfg: Any, path: str, noise: float, seed: int, progress: Any) -> int:
    """The feed as JSON lines (the bytes of ``simulate.write_jsonl``; with ``noise``, of ``add_noise``).

    Progress: the fraction is the event time reached (events come in occurred_at order), since
    the number of events of a run is only known at its end."""
    from streams.core.contract import parse_timestamp
    from streams.devtools import simulate

    start, span = cfg.start_ms, max(1.0, cfg.duration_s * 1000)
    latest = [start]

    def events() -> Any:
        for ev in simulate.generate(cfg):
            latest[0] = ev["occurred_at"]
            yield ev

    lines = simulate.add_noise(events(), noise, seed) if noise else map(simulate.dumps, events())
    n = 0
    buf: list[bytes] = []
    with open(path, "wb") as fh:
        for line in lines:
            buf.append(line)
            if len(buf) >= 8192:
                fh.write(b"\n".join(buf) + b"\n")
                n += len(buf)
                buf.clear()
                progress.update(n, fraction=(parse_timestamp(latest[0]) - start) / span)
        if buf:
            fh.write(b"\n".join(buf) + b"\n")
            n += len(buf)
    progress.update(n, fraction=1.0)
    return n


async def _simulate_kafka(s: Settings, cfg: Any, progress: Any = None) -> int:
    from aiokafka import AIOKafkaProducer

    from streams.app import topics
    from streams.devtools.simulate import stream_live
    from streams.kafka_admin import client_kwargs

    await topics.ensure_all(s)
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, linger_ms=5, acks="all",
                                enable_idempotence=True, **client_kwargs(s))
    try:
        await producer.start()
        t0 = time.monotonic()

        async def send(key: bytes, value: bytes) -> None:
            await producer.send(s.topic(topics.RAW), value=value, key=key)
            if progress is not None:  # paced to the wall clock: the fraction is the time gone
                progress.advance(fraction=(time.monotonic() - t0) / max(cfg.duration_s, 1e-9))

        n = await stream_live(cfg, send)
    finally:
        await producer.stop()
    print(f"sent {n} events to {s.topic(topics.RAW)}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- process / backfill


def cmd_process(args: argparse.Namespace) -> int:
    from streams.app.worker import pipeline_config
    from streams.offline import process_file

    s = _settings(args)
    config = pipeline_config(s)
    source = _need_file(args.input, "input file", "give a JSON-lines file of touchpoints, e.g. one written by "
                        "`touchstream simulate --out feed.jsonl`")
    if args.into_clickhouse:
        ch = _clickhouse(s)  # busy or unreachable: say so before the work, not after it
        ch.close()
    t0 = time.monotonic()
    with _progress(args, "process", unit="lines") as progress:
        summary = process_file(source, Path(args.out), config, progress)
    dt = time.monotonic() - t0
    result: dict[str, Any] = {
        "lines": summary.lines, "valid": summary.valid, "dead_lettered": summary.dead_lettered,
        "duplicates": summary.duplicates, "written": summary.written, "seconds": round(dt, 3),
        "events_per_s": round(summary.lines / dt) if dt > 0 else None,
    }
    if args.into_clickhouse:
        loaded = _backfill(args, s, Path(args.out))
        result["clickhouse"] = loaded.as_dict()
        print(orjson.dumps(result).decode())
        return _rejected_exit(loaded)
    print(orjson.dumps(result).decode())
    return 0


def add_process(sub: Any) -> None:
    pr = _command(sub, "process", cmd_process, "the core offline over a JSON-lines file",
                  "Run the same core as the live worker over a JSON-lines file, in event time, and write "
                  "its outputs (enriched.jsonl, sessions.jsonl, sla.jsonl, funnel.jsonl, anomalies.jsonl, "
                  "dlq.jsonl, ...) to --out. The same input gives the same bytes. With --into-clickhouse the "
                  "outputs are then loaded into ClickHouse (as `touchstream backfill`).",
                  ["touchstream process feed.jsonl --out out/",
                   "touchstream process feed.jsonl --out out/ --into-clickhouse"],
                  (*CORE_ENV, *CLICKHOUSE_ENV), quiet=True)
    pr.add_argument("input", help="JSON-lines file of touchpoints (contract: schemas/touchpoint.v1.json)")
    pr.add_argument("--out", required=True, help="directory for the output files (created)")
    pr.add_argument("--into-clickhouse", action="store_true",
                    help="then load the outputs into ClickHouse (idempotent, see `touchstream backfill`)")


def _backfill(args: argparse.Namespace, s: Settings, out_dir: Path) -> Any:
    from streams.clickhouse.backfill import load
    from streams.clickhouse.migrate import migrate

    ch = _clickhouse(s)
    try:
        migrate(ch)
        with _progress(args, "backfill", unit="lines") as progress:
            return load(ch, out_dir, progress)
    finally:
        ch.close()


def _rejected_exit(loaded: Any) -> int:
    if not loaded.rejected:
        return 0
    first = next(t.first_rejection for t in loaded.tables.values() if t.first_rejection)
    print(f"touchstream: {loaded.rejected} line(s) could not be loaded and were skipped (first: {first}); "
          "the rest is in ClickHouse", file=sys.stderr)
    return EXIT_FAILURE


def cmd_backfill(args: argparse.Namespace) -> int:
    s = _settings(args)
    out_dir = Path(args.out_dir)
    if not out_dir.is_dir():
        raise CliError(f"{out_dir} is not a directory: give the --out directory of `touchstream process`")
    loaded = _backfill(args, s, out_dir)
    print(orjson.dumps(loaded.as_dict()).decode())
    return _rejected_exit(loaded)


def add_backfill(sub: Any) -> None:
    bf = _command(sub, "backfill", cmd_backfill, "load `touchstream process` outputs into ClickHouse",
                  "Insert the outputs of `touchstream process` into the same ClickHouse tables the live sink "
                  "writes, with the same row mapping. Idempotent: loading a directory twice changes no count "
                  "(identity-keyed tables and deterministic insert deduplication tokens). Migrates first.",
                  ["touchstream process feed.jsonl --out out/ && touchstream backfill out/",
                   "CLICKHOUSE_URL=http://user:pass@clickhouse:8123/touchstream touchstream backfill out/"],
                  CLICKHOUSE_ENV, quiet=True)
    bf.add_argument("out_dir", help="the --out directory of `touchstream process`")


# ----------------------------------------------------------------------------- costs


def cmd_costs(args: argparse.Namespace) -> int:
    import hashlib

    from streams.clickhouse.migrate import migrate
    from streams.clickhouse.rows import COST_COLUMNS, cost_rows
    from streams.core.money import exponent
    from streams.core.roi import CostFeedError, parse_cost_feed

    s = _settings(args)
    path = _need_file(args.file, "cost feed", "give a CSV with the header date,tenant_id,channel,campaign,cost,"
                      "currency (docs/profiles-and-attribution.md), e.g. one of `touchstream simulate --costs`")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        parsed = parse_cost_feed(text, str(path))  # any bad line: nothing is loaded
    except CostFeedError as exc:
        raise CliError(str(exc)) from exc
    rows = cost_rows(parsed, path.name)
    totals: dict[str, int] = {}
    for r in parsed:
        totals[r.currency] = totals.get(r.currency, 0) + r.cost_micros
    from streams.clickhouse.queries import micros_text

    summary = {"file": str(path), "lines": len(parsed), "rows": len(rows),
               "days": [min(r.day for r in parsed).isoformat(), max(r.day for r in parsed).isoformat()]
               if parsed else None,
               "tenants": sorted({r.tenant_id for r in parsed}),
               "cost": {cur: micros_text(m, exponent(cur)) for cur, m in sorted(totals.items())}}
    if args.dry_run or not rows:
        print(orjson.dumps({**summary, "loaded": False}).decode())
        return 0
    ch = _clickhouse(s)
    try:
        migrate(ch)
        # a token per load, not per content: loading feed A, then a corrected B, then A again must
        # make A current again, which ClickHouse's block deduplication would otherwise drop
        token = f"costs:{hashlib.sha256(text.encode()).hexdigest()[:16]}:{time.time_ns()}"
        ch.insert("campaign_costs", rows, COST_COLUMNS, dedup_token=token)
    finally:
        ch.close()
    print(orjson.dumps({**summary, "loaded": True}).decode())
    return 0


def add_costs(sub: Any) -> None:
    c = _command(sub, "costs", cmd_costs, "load a campaign cost feed (CSV) into ClickHouse",
                 "load: parse a cost feed (CSV: date,tenant_id,channel,campaign,cost,currency; what campaigns "
                 "paid outside the ad events' own costs) and insert it into campaign_costs, where `query roi`, "
                 "the board and Grafana read it. Whole or not at all: a bad line is reported with its file and "
                 "line number and nothing is loaded. Loading a day again replaces that day's (tenant, channel, "
                 "campaign, currency) amounts; for a (tenant, day, campaign) in the feed, ad-event costs are "
                 "ignored (never paid twice).",
                 ["touchstream costs load costs.csv",
                  "touchstream simulate --duration 3600 --out feed.jsonl --costs costs.csv && "
                  "touchstream costs load costs.csv --dry-run"],
                 CLICKHOUSE_ENV)
    c.add_argument("action", choices=["load"], help="what to do with the feed")
    c.add_argument("file", help="the cost feed CSV")
    c.add_argument("--dry-run", action="store_true", help="parse and summarise only, load nothing")
    _data_dir_flag(c)


# ----------------------------------------------------------------------------- status


def _local_broker_state(s: Settings) -> dict[str, Any] | None:
    """The project-started broker's state when KAFKA_BOOTSTRAP_SERVERS is unset (else None)."""
    if s.kafka_bootstrap is not None:
        return None
    from streams.localkafka import LocalKafka

    k = LocalKafka.from_state(s.kafka_dir)
    if k is None:
        return {"state": "never started", "dir": str(s.kafka_dir)}
    running = [n.node_id for n in k.nodes if k.running(n)]
    return {"state": "running" if running else "stopped", "dir": str(s.kafka_dir), "nodes_running": running}


def cmd_status(args: argparse.Namespace) -> int:
    from streams.app.topics import all_groups
    from streams.clickhouse.client import redact
    from streams.kafka_admin import describe

    s = _settings(args)
    kafka: dict[str, Any] = {"bootstrap": s.bootstrap, "reachable": False, "topics": {}, "lag": {}}
    local = _local_broker_state(s)
    if local is not None:
        kafka["local_broker"] = local
    if local is not None and local["state"] != "running":
        kafka["error"] = (f"the local broker is {local['state']}: `touchstream kafka start` starts it "
                          "(`touchstream run` starts and stops its own)")
    else:
        from streams.kafka_admin import BrokerUnreachable, check_broker

        groups = [*all_groups(s.app_id), f"{s.app_id}-dlq-replay"]
        try:
            asyncio.run(check_broker(s, timeout=5.0))  # the reason in one line (refused, TLS, credentials)
            info = asyncio.run(describe(s.bootstrap, groups, s, timeout=5.0))
            kafka.update(reachable=True, **info)
        except BrokerUnreachable as exc:
            kafka["error"] = str(exc)
        except Exception as exc:  # broker down is a valid status, not a crash
            kafka["error"] = f"{type(exc).__name__}: {exc}"[:300]
    ch_report: dict[str, Any] = {"url": redact(s.clickhouse_url), "reachable": False, "tables": {}}
    path = _engine_path(s)
    pid = engine_holder(path) if path is not None else None
    if pid is not None:
        ch_report.update(busy=True, held_by_pid=pid or None, error=_busy_message(s, pid))
    else:
        try:
            ch = _clickhouse(s)
            try:
                for table in ch.tables():
                    ch_report["tables"][table] = ch.count(table, final=True)
            finally:
                ch.close()
            ch_report["reachable"] = True
        except Exception as exc:  # a server down is a valid status, not a crash
            ch_report["error"] = f"{type(exc).__name__}: {exc}"[:300]
    report = {"kafka": kafka, "clickhouse": ch_report}
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0
    state = "reachable" if kafka["reachable"] else "UNREACHABLE: " + kafka.get("error", "")
    print(f"Kafka {kafka['bootstrap']}: {state}")
    for name, t in sorted(kafka.get("topics", {}).items()):
        print(f"  {name:28s} partitions={t['partitions']:<3d} messages={t['messages']}")
    for gid, lag in kafka.get("lag", {}).items():
        if lag:
            print(f"  lag[{gid}]: " + ", ".join(f"{t}={n}" for t, n in sorted(lag.items())))
    print(f"ClickHouse {ch_report['url']}: " + ("ok" if ch_report["reachable"] else ch_report.get("error", "")))
    for table, n in sorted(ch_report["tables"].items()):
        print(f"  {table:28s} rows={n}")
    return 0


def add_status(sub: Any) -> None:
    st = _command(sub, "status", cmd_status, "broker, topics, lag and ClickHouse rows",
                  "What runs and how far it is: the broker (or the local broker's state), each topic's "
                  "messages, each consumer group's lag, and the rows per ClickHouse table. While a worker "
                  "holds the embedded ClickHouse, says busy.",
                  ["touchstream status", "touchstream status --json | jq .kafka.lag"],
                  (*KAFKA_ENV, *CLICKHOUSE_ENV, "TOUCHSTREAM_APP_ID"))
    st.add_argument("--json", action="store_true", help="the whole report as JSON on stdout")
    _data_dir_flag(st)


# ----------------------------------------------------------------------------- dlq replay


def cmd_dlq(args: argparse.Namespace) -> int:
    from streams.dlq import replay

    s = _settings(args)
    _check_broker(s)
    with _progress(args, "dlq replay", unit="letters") as progress:
        res = asyncio.run(replay(s, reason=args.reason, timeout_s=args.timeout, progress=progress))
    print(orjson.dumps(res).decode())
    return 0


def add_dlq(sub: Any) -> None:
    d = _command(sub, "dlq", cmd_dlq, "dead-letter tools",
                 "replay: re-send the dead letters that now validate (after a producer or contract fix) to "
                 "touchpoints.raw with their original key and bytes. Idempotent: progress is a committed "
                 "consumer-group offset per --reason, and a re-sent event is dropped by the event_id dedup.",
                 ["touchstream dlq replay", "touchstream dlq replay --reason unknown_channel --timeout 30"],
                 (*KAFKA_ENV, "TOUCHSTREAM_APP_ID", "TOUCHSTREAM_MAX_MESSAGE_BYTES", "TOUCHSTREAM_MAX_FUTURE_S"),
                 quiet=True)
    d.add_argument("action", choices=["replay"], help="what to do with the dead-letter topic")
    d.add_argument("--reason", help="only messages dead-lettered for this reason (schemas/dlq.v1.json)")
    d.add_argument("--timeout", type=float, default=10.0, help="stop when no DLQ message arrives for this long (s)")


# ----------------------------------------------------------------------------- query

QUERY_TABLES = {"funnel": ("touchpoints",), "sla": ("response_times", "sla_events"), "sessions": ("sessions",),
                "anomalies": ("anomalies",), "profiles": ("person_profiles",),
                "attribution": ("attribution_credits",), "roi": ("attribution_credits", "campaign_costs")}
#: the period when --since is not given: the live questions look at the last hour, the growth
#: questions (profiles, attribution, ROI) at everything
DEFAULT_SINCE = {"funnel": "1h", "sla": "1h", "sessions": "1h", "anomalies": "1h"}


def cmd_query(args: argparse.Namespace) -> int:
    from streams.clickhouse import queries
    from streams.clickhouse.client import redact

    s = _settings(args)
    since_text = args.since or DEFAULT_SINCE.get(args.what)
    try:
        since = None if since_text is None else queries.parse_since(since_text)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    ch = _clickhouse(s)
    try:
        missing = [t for t in QUERY_TABLES[args.what] if t not in set(ch.tables())]
        if missing:
            raise CliError(f"no {', '.join(missing)} table in ClickHouse {redact(s.clickhouse_url)} (database "
                           f"{ch.db}): nothing has been loaded yet; run `touchstream run` (it loads history), "
                           "`touchstream backfill OUT_DIR`, or `touchstream migrate` and a worker")
        if args.what in ("profiles", "attribution", "roi"):
            return _growth_query(args, ch, since)
        assert since is not None
        if args.what == "funnel":
            rows = queries.funnel(ch, args.tenant, since, args.by, window_ms=s.funnel_window_ms)
        elif args.what == "sla":
            rows = queries.sla(ch, args.tenant, since)
        elif args.what == "sessions":
            rows = queries.sessions(ch, args.tenant, since)
        else:
            rows = queries.anomalies(ch, args.tenant, since, open_only=not args.all)
    finally:
        ch.close()
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_table(rows)
    return 0


def _growth_query(args: argparse.Namespace, ch: Any, since: int | None) -> int:
    """``query profiles|attribution|roi``: the answers of issue 21 (docs/profiles-and-attribution.md)."""
    from streams.clickhouse import queries

    by = args.by or "campaign"
    if args.what == "profiles":
        _fresh_rfm(ch)
        if args.person:
            found = queries.profile(ch, args.person, args.tenant)
            if not found:
                raise CliError(f"no profile of person {args.person!r}"
                               + (f" in tenant {args.tenant}" if args.tenant else "")
                               + ": person ids are on the enriched touchpoints (person_id)")
            return _emit(args, found, lambda: [_print_person(p) for p in found])
        body = {"lifecycle": queries.lifecycle_counts(ch, args.tenant, since),
                "persons": queries.profiles(ch, args.tenant, since, sort=args.sort, limit=args.limit,
                                            stage=args.stage)}
        return _emit(args, body, lambda: _print_profiles(body, args.sort))
    if args.what == "attribution":
        rows = queries.attribution(ch, args.tenant, since, by=by)
        return _emit(args, rows, lambda: _print_table(_for_people(rows, by)))
    if by == "campaign":
        rows = queries.campaign_roi(ch, args.tenant, since, model=args.model)
    else:
        rows = queries.roi(ch, args.tenant, since, by=by, model=args.model)

    def text() -> None:
        _print_table(_for_people([{k: v for k, v in r.items() if not k.startswith("chain")} for r in rows], by))
        chains = [r for r in rows if r.get("chain")]
        if chains:
            print("\nstage conversion chain (persons the campaign touched who reached each stage; rate from the "
                  "previous stage)")
            _print_table([{"tenant_id": r["tenant_id"], "campaign": r["campaign"],
                           **{s["stage"]: s["persons"] if s["rate"] is None else f"{s['persons']} ({s['rate']:.1%})"
                              for s in r["chain"]},
                           "deals/entrants": r["chain_product"]} for r in chains])

    return _emit(args, rows, text)


def _fresh_rfm(ch: Any) -> None:
    """RFM refreshes every 10 minutes on a server (left to its schedule); the embedded engine
    lives only as long as a command, so it may never have scored the profiles it holds: refresh
    first when it is behind."""
    from streams.clickhouse import queries

    if not ch.embedded:
        return
    try:
        if queries.rfm_is_stale(ch):
            queries.refresh_rfm(ch)
    except Exception as exc:  # e.g. a read-only user: the scores of the last refresh still answer
        from clickhouse_connect.driver.exceptions import DatabaseError

        if not isinstance(exc, DatabaseError):
            raise
        print(f"touchstream query: RFM scores not refreshed ({str(exc).splitlines()[0][:160]}); "
              "showing the last refresh", file=sys.stderr)


def _emit(args: argparse.Namespace, body: Any, text: Callable[[], Any]) -> int:
    if args.json:
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    else:
        text()
    return 0


def _for_people(rows: list[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """Rows without the integer twins of the money columns (``*_minor``, ``*_micros``, ``exponent``):
    the table shows the decimals, ``--json`` has both. A missing campaign/channel reads "(none)"."""
    return [{k: ("(none)" if k == by and v is None else v) for k, v in r.items()
             if not k.endswith(("_minor", "_micros")) and k != "exponent"} for r in rows]


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _revenue(p: dict[str, Any]) -> str:
    return ", ".join(f"{cur} {amount}" for cur, amount in p["revenue"].items())


def _print_profiles(body: dict[str, Any], sort: str) -> None:
    from streams.core.tagrules import LIFECYCLE

    table: dict[str, dict[str, Any]] = {}
    for r in body["lifecycle"]:
        row = table.setdefault(r["tenant_id"], {"tenant_id": r["tenant_id"]})
        row[r["stage"]] = r["persons"]
    for row in table.values():
        row["persons"] = sum(row[s] for s in LIFECYCLE)
    print("persons per lifecycle stage")
    _print_table(list(table.values()))
    print(f"\npersons ({'most recently seen' if sort == 'recent' else 'most ' + sort} first)")
    _print_table([{"tenant_id": p["tenant_id"], "person_id": p["person_id"], "stage": p["lifecycle_stage"],
                   "last_seen": _iso(p["last_seen"]), "events": p["events"], "deals": p["deals_won"],
                   "revenue": _revenue(p), "rfm": p["rfm"], "tags": ",".join(p["tags"]),
                   "channels": ",".join(p["channels"])} for p in body["persons"]])


def _print_person(p: dict[str, Any]) -> None:
    lines = [("person", p["person_id"] + (f" (merged from {p['merged_from']})" if p.get("merged_from") else "")),
             ("tenant", p["tenant_id"]),
             ("lifecycle stage", f"{p['lifecycle_stage']} since {_iso(p['lifecycle_stage_at'])}"),
             ("seen", f"{_iso(p['first_seen'])} .. {_iso(p['last_seen'])}, {p['events']} events"),
             ("identifiers", ", ".join(p["identifier_types"])), ("channels", ", ".join(p["channels"])),
             ("campaigns", ", ".join(p["campaigns"])),
             ("funnel", ", ".join(f"{k} {v}" for k, v in p["funnel_stages"].items())),
             ("deals won", f"{p['deals_won']}" + (f" ({_revenue(p)})" if p["revenue"] else "")),
             ("tags", ", ".join(p["tags"])),
             ("rfm", "not scored yet" if p["rfm"] is None else
              f"{p['rfm']} (recency {p['r_score']}, frequency {p['f_score']}, monetary {p['m_score']})")]
    for k, v in lines:
        print(f"{k:16s} {v}")


def add_query(sub: Any) -> None:
    from streams.core.attribution import MODELS
    from streams.core.tagrules import LIFECYCLE

    q = _command(sub, "query", cmd_query,
                 "answers from ClickHouse: funnel, sla, sessions, anomalies, profiles, attribution, roi",
                 "Answers from ClickHouse (exact: FINAL): funnel = persons per stage and conversion; sla = "
                 "attainment, response-time percentiles and breaches by team and channel; sessions = sessions "
                 "by channel; anomalies = open (or --all) funnel anomalies with estimated lost conversions; "
                 "profiles = persons per lifecycle stage and the most recent (or --sort) persons with tags and "
                 "RFM scores, or one --person; attribution = attributed revenue per campaign (or --by channel), "
                 "the five models side by side; roi = attributed revenue (--model), cost, ROAS and ROI per "
                 "campaign (or --by channel) with the stage conversion chain. Money is printed with the "
                 "currency's decimals; --json also has the integer minor units / micros.",
                 [f"touchstream query funnel --tenant {TENANTS[0]} --since 1h --by campaign",
                  f"touchstream query sla --tenant {TENANTS[1]} --since 24h --json",
                  "touchstream query anomalies --since 7d --all",
                  f"touchstream query sessions --tenant {TENANTS[2]} | head",
                  f"touchstream query profiles --tenant {TENANTS[1]} --sort revenue --limit 10",
                  "touchstream query profiles --person p_59f439caab8f0738 --json",
                  f"touchstream query attribution --tenant {TENANTS[0]} --since 30d",
                  "touchstream query roi --model time_decay --by channel --json"],
                 CLICKHOUSE_ENV)
    q.add_argument("what", choices=list(QUERY_TABLES), help="which answer")
    q.add_argument("--tenant", help=f"one tenant, e.g. {TENANTS[0]} (default: all)")
    q.add_argument("--since", default=None,
                   help="period: 30m, 1h, 7d (default 1h; profiles, attribution, roi: all time). profiles: "
                        "persons seen in it; attribution: deals won in it; roi: whole UTC days from the one "
                        "it starts in")
    q.add_argument("--by", choices=["campaign", "channel"],
                   help="funnel: split by dimension; attribution, roi: per campaign (default) or channel")
    q.add_argument("--all", action="store_true", help="anomalies: include resolved ones")
    q.add_argument("--model", choices=list(MODELS), default="linear",
                   help="roi: the attribution model whose revenue is set against cost (default linear)")
    q.add_argument("--person", metavar="ID", help="profiles: one person's profile (followed through merges)")
    q.add_argument("--sort", choices=["recent", "revenue", "events"], default="recent",
                   help="profiles: which persons to list first (default recent)")
    q.add_argument("--limit", type=int, default=20, help="profiles: how many persons to list (default 20)")
    q.add_argument("--stage", choices=list(LIFECYCLE), help="profiles: only persons at this lifecycle stage")
    q.add_argument("--json", action="store_true", help="rows as JSON instead of a table")
    _data_dir_flag(q)


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("(no rows)")
        return
    cols = list(rows[0].keys())
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


# ----------------------------------------------------------------------------- evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.what == "attribution":
        return _evaluate_attribution(args)
    if args.what == "nab":
        return _evaluate_nab(args)
    from streams.devtools.evaluate import main as evaluate

    hint = "write it with `touchstream simulate --truth` / `touchstream process --out`"
    if not args.truth or not args.anomalies:
        raise CliError("evaluate (funnel incidents) needs --truth and --anomalies: the files of "
                       "`touchstream simulate --truth` and `touchstream process --out`")
    truth = _need_file(args.truth, "truth file", hint)
    anomalies = _need_file(args.anomalies, "anomalies file", hint)
    funnel = _need_file(args.funnel, "funnel file", hint) if args.funnel else None
    res = evaluate(str(truth), str(anomalies), str(funnel) if funnel else None)
    if args.json:
        print(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"recall (eligible incidents)        {res['recall']}  ({res['eligible_incidents']} eligible)")
    print(f"false alarms                       {res['false_alarms']}  "
          f"({res['false_alarms_per_100_series_days']} per 100 series-days over {res['series_days']} series-days)")
    print(f"median detection delay (windows)   {res['median_delay_windows']}")
    print(f"secondary alarms during incidents  {res['secondary_alarms_during_incidents']}")
    _print_table(res["incidents"])
    return 0


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    raise CliError(f"{path}:{n}: not JSON ({exc})") from exc
    return out


def _evaluate_attribution(args: argparse.Namespace) -> int:
    """Attribution against the simulator's ground truth: from files (``--truth`` of
    ``simulate --truth``, ``--credits`` = attribution.jsonl of ``process``), or simulate → process
    (offline core, this process) → compare."""
    import tempfile

    from streams.app.worker import pipeline_config
    from streams.devtools import simulate
    from streams.devtools.evaluate_attribution import evaluate
    from streams.offline import run as run_offline

    config = pipeline_config(_settings(args))
    if args.truth or args.credits:
        hint = "write them with `touchstream simulate --truth` and `touchstream process --out`"
        if not (args.truth and args.credits):
            raise CliError(f"evaluate attribution from files needs both --truth and --credits: {hint}")
        truth = orjson.loads(_need_file(args.truth, "truth file", hint).read_bytes())
        if "attribution" not in truth:
            raise CliError(f"{args.truth} has no attribution truth: write it with this version's "
                           "`touchstream simulate --truth`")
        credits = _read_jsonl(_need_file(args.credits, "credits file", hint))
        run_info: dict[str, Any] = {"truth": str(args.truth), "credits": str(args.credits)}
    else:
        start_ms = int(args.start_ms) if args.start_ms is not None else \
            int(time.time() * 1000) - int(args.duration * 1000)
        cfg = simulate.SimConfig(rate=args.rate, duration_s=args.duration, seed=args.seed, start_ms=start_ms)
        truth = simulate.truth(cfg)
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="ts-eval-") as tmp, \
                _progress(args, "simulate+process", unit="events") as progress:
            summary = run_offline((simulate.dumps(ev) for ev in simulate.generate(cfg)), Path(tmp), config,
                                  source="simulate", progress=progress)
            credits = _read_jsonl(Path(tmp) / "attribution.jsonl")
        run_info = {"rate": args.rate, "duration_s": args.duration, "seed": args.seed, "start_ms": start_ms,
                    "events": summary.lines, "seconds": round(time.monotonic() - t0, 1)}
    res = {"run": run_info, **evaluate(truth, credits, config.attribution)}
    if args.json:
        print(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"deals {res['deals']}, attributed {res['deals_attributed']}, missing {len(res['deals_missing'])}, "
          f"unexpected {len(res['deals_unexpected'])}, revised {res['deals_revised']}")
    print(f"totals exact (every deal, model and revision sums to its value): {res['totals_exact']}")
    for problem in res["total_problems"]:
        print(f"  {problem}")
    acq = res["acquisition"]
    print(f"first touch names the acquiring campaign: {acq['first_touch_names_it']} of {acq['deals_with_campaign']}")
    _print_table([{"model": m, "exact_deals": v["exact_deals"], "exact_share": _round(v["exact_share"]),
                   "credit_accuracy": _round(v["credit_accuracy"])} for m, v in res["models"].items()])
    return 0


def _round(x: float | None, places: int = 4) -> float | None:
    return None if x is None else round(x, places)


def _evaluate_nab(args: argparse.Namespace) -> int:
    from streams.devtools import nab_eval

    root = Path(args.root) if args.root else nab_eval.corpus.DEFAULT_ROOT
    if not (root / "data").is_dir() or not (root / "labels").is_dir():
        raise CliError(f"no NAB corpus at {root} (expected data/ and labels/): give --root")
    if not args.json:
        argv = ["--root", str(root)]
        if args.categories:
            argv += ["--categories", *args.categories]
        if args.files:
            argv += ["--files", *args.files]
        if args.out:
            argv += ["--json", str(args.out)]
        if nab_eval.main(argv) != 0:
            raise CliError(f"no NAB data files selected under {root}")
        return 0
    categories = tuple(args.categories) if args.categories else nab_eval.DEFAULT_CATEGORIES
    result = nab_eval.evaluate(root, args.files, categories=categories)
    if not result["files"]:
        raise CliError(f"no NAB data files selected under {root}")
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


def add_evaluate(sub: Any) -> None:
    ev = _command(sub, "evaluate", cmd_evaluate,
                  "score the detector and attribution: vs simulator truth, NAB",
                  "funnel (default): score the anomaly detector's output of a simulated run against the "
                  "incidents the simulator injected: recall, false alarms per 100 series-days, median "
                  "detection delay. attribution: simulate a run, process it with the offline core and compare "
                  "each model's credits with the simulator's ground truth (or compare --truth and --credits "
                  "files): deals exact to the cent, credit accuracy, totals exact. nab: the anomaly detector "
                  "scored with NAB's rules on the NAB corpus (docs/detector.md).",
                  ["touchstream simulate --duration 3600 --out feed.jsonl --truth truth.json && "
                   "touchstream process feed.jsonl --out out/ && "
                   "touchstream evaluate --truth truth.json --anomalies out/anomalies.jsonl --funnel out/funnel.jsonl",
                   "touchstream evaluate attribution --rate 50 --duration 14400 --seed 7",
                   "touchstream evaluate attribution --truth truth.json --credits out/attribution.jsonl --json",
                   "touchstream evaluate nab --root ../shared/data/nab"],
                  ("TOUCHSTREAM_RULES_DIR", "TOUCHSTREAM_ATTRIBUTION_LOOKBACK_DAYS"), quiet=True)
    ev.add_argument("what", nargs="?", choices=["funnel", "attribution", "nab"], default="funnel",
                    help="what to score (default funnel: the detector's incidents)")
    ev.add_argument("--truth", help="funnel, attribution: the truth file of `touchstream simulate --truth`")
    ev.add_argument("--anomalies", help="funnel: anomalies.jsonl of `touchstream process`")
    ev.add_argument("--funnel", help="funnel: funnel.jsonl of the same run: eligibility and series-days")
    ev.add_argument("--credits", help="attribution: attribution.jsonl of `touchstream process` (with --truth)")
    ev.add_argument("--rate", type=float, default=50.0, help="attribution: simulated events per second (default 50)")
    ev.add_argument("--duration", type=float, default=4 * 3600.0,
                    help="attribution: seconds of simulated event time (default 14400)")
    ev.add_argument("--seed", type=int, default=7, help="attribution: simulator seed (default 7)")
    ev.add_argument("--start-ms", help="attribution: event time of the first event, epoch ms "
                                       "(default: duration before now)")
    ev.add_argument("--root", help="nab: NAB directory with data/ and labels/ (default: the shared data set)")
    ev.add_argument("--categories", nargs="+", help="nab: data categories (default realAdExchange realTraffic)")
    ev.add_argument("--files", nargs="+", help="nab: relative data files instead of categories")
    ev.add_argument("--out", help="nab: also write the full result as JSON to this file")
    ev.add_argument("--json", action="store_true", help="the scores as JSON on stdout")


# ----------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    from streams.devtools import bench

    s = _settings(args)
    phases = tuple(p.strip() for p in args.only.split(",")) if args.only else bench.PHASES
    unknown = set(phases) - set(bench.PHASES)
    if unknown:
        raise CliError(f"unknown bench phase(s) {sorted(unknown)}; choose from {', '.join(bench.PHASES)}")
    cfg = bench.BenchConfig(events=args.events, partitions=args.partitions, workers=args.workers, rate=args.rate,
                            persons=args.persons, recovery_persons=args.recovery_persons,
                            sla_conversations=args.sla_conversations, sink_rows=args.sink_rows, phases=phases)
    return bench.main(s, cfg, args.json)


def add_bench(sub: Any) -> None:
    b = _command(sub, "bench", cmd_bench, "bare consumer vs full pipeline, latency, memory, recovery",
                 "Measure the pipeline on this machine: throughput against a bare consumer, end-to-end latency "
                 "at an offered load, memory per active person, state recovery, SLA timers, ClickHouse inserts.",
                 ["touchstream bench --only pipeline --events 100000",
                  "touchstream bench --json bench.json"],
                 (*KAFKA_ENV, *CLICKHOUSE_ENV))
    b.add_argument("--events", type=int, default=200_000, help="events of the throughput runs")
    b.add_argument("--partitions", type=int, default=4, help="partitions of the bench topics")
    b.add_argument("--workers", type=int, default=1,
                   help="pipeline run: 1 = one worker with every role; W >= 2 = W-1 processing + 1 sink worker")
    b.add_argument("--rate", type=float, default=5000.0, help="offered load for the latency run")
    b.add_argument("--persons", type=int, default=100_000, help="active persons for the memory figure")
    b.add_argument("--recovery-persons", type=int, default=1_000_000, help="persons in the state to restore")
    b.add_argument("--sla-conversations", type=int, default=100_000, help="open conversations for the timer run")
    b.add_argument("--sink-rows", type=int, default=200_000, help="rows per ClickHouse table for the insert run")
    b.add_argument("--only", help="comma-separated phases: pipeline,memory,recovery,sla,sink (default: all)")
    b.add_argument("--json", help="also write the figures to this file")


# ----------------------------------------------------------------------------- parser

COMMANDS: tuple[Callable[[Any], None], ...] = (
    add_run, add_worker, add_kafka, add_migrate, add_simulate, add_process, add_backfill, add_costs, add_status,
    add_query, add_dlq, add_evaluate, add_bench,
)

EPILOG = f"""examples:
  touchstream run                          # everything local: broker, ClickHouse, history, worker, feed
  touchstream query funnel --tenant {TENANTS[0]} --since 1h --by campaign
  touchstream status --json
  touchstream <command> --help             # each command: what it does, flags, examples, environment

Expected failures end in one line on stderr saying what to do (exit 1); --debug shows the traceback.
Long-running commands report progress on stderr (--quiet silences it); stdout keeps the result.
"""


def _data_dir_flag(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: an omitted sub-command flag must not reset the global one
    p.add_argument("--data-dir", default=argparse.SUPPRESS, help="overrides TOUCHSTREAM_DATA_DIR")


def _command(sub: Any, name: str, fn: Callable[[argparse.Namespace], int], summary: str, description: str,
             examples: Sequence[str], env: Sequence[str], quiet: bool = False) -> argparse.ArgumentParser:
    """A sub-command whose --help has a description, examples and the variables it reads."""
    docs = _env_docs()
    lines = ["examples:", *(f"  {e}" for e in examples), "", "environment:"]
    if env:
        width = max(len(v) for v in env)
        lines += [f"  {v.ljust(width)}  {docs[v]}" for v in env]
    else:
        lines.append("  (none)")
    p = sub.add_parser(name, help=summary, description=description, epilog="\n".join(lines),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    if quiet:
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no progress output on stderr")
    p.set_defaults(fn=fn)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("touchstream")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="touchstream", description="Real-time touchpoint stream processor: identity, sessions, response-time "
        "SLAs, funnel anomalies. Kafka in, Kafka and ClickHouse out.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"touchstream {_version()}")
    p.add_argument("--data-dir", help="overrides TOUCHSTREAM_DATA_DIR (local state: Kafka, embedded ClickHouse)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output on stderr")
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure instead of one line")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return p


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from streams.logs import setup

    secrets: list[str] = []
    with contextlib.suppress(Exception):  # a bad setting is reported by the command itself
        secrets = _secrets(Settings.from_env())
    setup("human", os.environ.get("TOUCHSTREAM_LOG_LEVEL") or "warning", secrets)
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `touchstream query ... | head`: the reader has what it wanted
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        message = None if args.debug else _explain(exc)
        if message is None:
            raise
        print(f"touchstream {args.command}: {message}", file=sys.stderr)
        return EXIT_FAILURE
