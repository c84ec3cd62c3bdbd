"""``touchstream`` command line: every entry point of the product, with examples in ``--help``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from streams.settings import Settings

EPILOG = """examples:
  touchstream run --duration 60            # local Kafka + embedded ClickHouse + simulated feed
  touchstream kafka start [--nodes 3]      # start the local KRaft broker(s) from Maven jars
  touchstream worker                       # the stream worker (against KAFKA_BOOTSTRAP_SERVERS)
  touchstream migrate                      # apply ClickHouse migrations (idempotent)
  touchstream simulate --rate 200 --duration 600 --seed 7 --out feed.jsonl --truth truth.json
  touchstream process feed.jsonl --out out/  # same core, offline, in event time
  touchstream status --json                # broker, topics, lag, ClickHouse row counts
  touchstream dlq replay --reason unknown_channel
  touchstream evaluate --truth truth.json --anomalies out/anomalies.jsonl --funnel out/funnel.jsonl
  touchstream query funnel --tenant acme --since 1h --by campaign
  touchstream query sla --since 24h --json

Long-running commands (simulate, process, migrate, dlq replay) report progress on stderr: one
updating line on a terminal, a line every 10 s otherwise; --quiet silences it. stdout keeps
only the machine-readable result.
"""


def _settings(args: argparse.Namespace) -> Settings:
    if getattr(args, "data_dir", None):
        os.environ["TOUCHSTREAM_DATA_DIR"] = str(args.data_dir)
    return Settings.from_env()


def _progress(args: argparse.Namespace, label: str, **kw: Any) -> Any:
    """The shared reporter (streams/progress.py) on stderr, silent with ``--quiet``."""
    from streams.progress import Progress

    return Progress(label, enabled=not getattr(args, "quiet", False), **kw)


# ---------------------------------------------------------------- kafka
def cmd_kafka(args: argparse.Namespace) -> int:
    from streams.localkafka import KafkaLaunchError, LocalKafka

    s = _settings(args)
    try:
        if args.action == "start":
            k = LocalKafka(s.kafka_dir, nodes=args.nodes, base_port=s.kafka_port)
            print(f"starting Kafka ({args.nodes} node(s)) under {s.kafka_dir} ...", flush=True)
            bootstrap = k.start()
            print(f"Kafka ready: KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
        else:
            k = LocalKafka.from_state(s.kafka_dir) or LocalKafka(s.kafka_dir, base_port=s.kafka_port)
            k.stop()
            print("Kafka stopped")
    except KafkaLaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------- migrate
def cmd_migrate(args: argparse.Namespace) -> int:
    from streams.clickhouse.client import ClickHouse, redact
    from streams.clickhouse.migrate import load, migrate

    s = _settings(args)
    if args.cluster_ddl:
        from streams.clickhouse.cluster import cluster_ddl

        print(cluster_ddl(args.cluster_ddl, s.clickhouse_database), end="")
        return 0
    ch = ClickHouse(s.clickhouse_url, s.clickhouse_database)
    total = len(load())
    with _progress(args, "migrate", unit="statements") as progress:
        applied = migrate(ch, progress=progress)
    print(f"ClickHouse {redact(s.clickhouse_url)} database {ch.db}: "
          f"{len(applied)} applied ({', '.join(applied) or 'none'}), {total - len(applied)} already up to date")
    ch.close()
    return 0


# ---------------------------------------------------------------- worker / run
def _prepare(s: Settings) -> None:
    from streams.app import topics
    from streams.clickhouse.client import ClickHouse
    from streams.clickhouse.migrate import migrate

    asyncio.run(topics.ensure_all(s))
    if s.role != "process":  # a processing-only worker never opens ClickHouse (the embedded engine is 1 process)
        ch = ClickHouse(s.clickhouse_url, s.clickhouse_database)
        migrate(ch)
        ch.close()


def _start_worker(s: Settings, extra_tasks: list[Any] | None = None, log_format: str | None = None) -> int:
    from streams.app.worker import run
    from streams.logs import setup

    setup(log_format or s.log_format, s.log_level, _secrets(s))
    return run(s, extra_tasks)


def cmd_worker(args: argparse.Namespace) -> int:
    s = _settings(args)
    _prepare(s)
    return _start_worker(s)


def _secrets(s: Settings) -> list[str]:
    """Values that must never reach a log line (see streams.logs.Redact)."""
    from streams.notify import NotifierError, notifier_urls

    found = [x for x in (s.kafka_sasl_password, s.web_token, s.pseudonym_salt) if x]
    with contextlib.suppress(NotifierError):
        found += list(notifier_urls(os.environ).values())
    return found


def cmd_run(args: argparse.Namespace) -> int:
    from streams.localkafka import KafkaLaunchError, LocalKafka

    s = _settings(args)
    started: LocalKafka | None = None
    if s.kafka_bootstrap is None:
        started = LocalKafka(s.kafka_dir, nodes=1, base_port=s.kafka_port)
        print(f"[run] starting local Kafka under {s.kafka_dir} (first time: Maven fetches the jars) ...", flush=True)
        try:
            started.start()
        except KafkaLaunchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        _prepare(s)
        print(f"[run] Kafka {s.bootstrap}, ClickHouse {s.clickhouse_url}, feed {args.rate}/s; Ctrl-C stops", flush=True)
        tasks = [_feed(args), _summary(args.duration)]
        return _start_worker(s, tasks, log_format="human")
    finally:
        if started is not None:
            print("[run] stopping local Kafka", flush=True)
            started.stop()


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
        await producer.start()
        try:
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


# ---------------------------------------------------------------- simulate / process
def cmd_simulate(args: argparse.Namespace) -> int:
    from streams.devtools import simulate

    start_ms = int(args.start_ms) if args.start_ms is not None else int(time.time() * 1000)
    cfg = simulate.SimConfig(rate=args.rate, duration_s=args.duration, seed=args.seed, start_ms=start_ms)
    if args.truth:
        Path(args.truth).write_bytes(orjson.dumps(simulate.truth(cfg), option=orjson.OPT_INDENT_2))
    if args.out == "kafka":
        s = _settings(args)
        with _progress(args, "simulate", unit="events") as progress:
            return asyncio.run(_simulate_kafka(s, cfg, progress))
    t0 = time.monotonic()
    with _progress(args, "simulate", unit="messages") as progress:
        n = _simulate_file(cfg, args.out, args.noise, args.seed, progress)
    print(f"wrote {n} messages to {args.out} in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


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
    await producer.start()
    try:
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


def cmd_process(args: argparse.Namespace) -> int:
    from streams.app.worker import pipeline_config
    from streams.offline import process_file

    s = _settings(args)
    config = pipeline_config(s)
    t0 = time.monotonic()
    with _progress(args, "process", unit="lines") as progress:
        summary = process_file(Path(args.input), Path(args.out), config, progress)
    dt = time.monotonic() - t0
    print(orjson.dumps({
        "lines": summary.lines, "valid": summary.valid, "dead_lettered": summary.dead_lettered,
        "duplicates": summary.duplicates, "written": summary.written, "seconds": round(dt, 3),
        "events_per_s": round(summary.lines / dt) if dt > 0 else None,
    }).decode())
    return 0


# ---------------------------------------------------------------- status
def cmd_status(args: argparse.Namespace) -> int:
    from streams.clickhouse.client import ClickHouse, redact
    from streams.kafka_admin import describe

    s = _settings(args)
    report: dict[str, Any] = {"kafka": {"bootstrap": s.bootstrap, "reachable": False, "topics": {}, "lag": {}}}
    from streams.app.topics import all_groups

    groups = [*all_groups(s.app_id), f"{s.app_id}-dlq-replay"]
    try:
        info = asyncio.run(describe(s.bootstrap, groups, s, timeout=5.0))
        report["kafka"].update(reachable=True, **info)
    except Exception as exc:  # broker down is a valid status, not a crash
        report["kafka"]["error"] = f"{type(exc).__name__}: {exc}"[:300]
    ch_report: dict[str, Any] = {"url": redact(s.clickhouse_url), "tables": {}}
    try:
        ch = ClickHouse(s.clickhouse_url, s.clickhouse_database)
        for table in ch.tables():
            ch_report["tables"][table] = ch.count(table, final=True)
        ch.close()
        ch_report["reachable"] = True
    except Exception as exc:  # embedded engine locked by a running worker, or server down
        ch_report["reachable"] = False
        ch_report["error"] = f"{type(exc).__name__}: {exc}"[:300]
    report["clickhouse"] = ch_report
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0
    k = report["kafka"]
    print(f"Kafka {k['bootstrap']}: {'reachable' if k['reachable'] else 'UNREACHABLE ' + k.get('error', '')}")
    for name, t in sorted(k.get("topics", {}).items()):
        print(f"  {name:28s} partitions={t['partitions']:<3d} messages={t['messages']}")
    for gid, lag in k.get("lag", {}).items():
        if lag:
            print(f"  lag[{gid}]: " + ", ".join(f"{t}={n}" for t, n in sorted(lag.items())))
    print(f"ClickHouse {ch_report['url']}: " + ("ok" if ch_report.get("reachable") else ch_report.get("error", "")))
    for table, n in sorted(ch_report["tables"].items()):
        print(f"  {table:28s} rows={n}")
    return 0


# ---------------------------------------------------------------- dlq replay
def cmd_dlq(args: argparse.Namespace) -> int:
    from streams.dlq import replay

    s = _settings(args)
    with _progress(args, "dlq replay", unit="letters") as progress:
        res = asyncio.run(replay(s, reason=args.reason, timeout_s=args.timeout, progress=progress))
    print(orjson.dumps(res).decode())
    return 0


# ---------------------------------------------------------------- query
def cmd_query(args: argparse.Namespace) -> int:
    from streams.clickhouse import queries
    from streams.clickhouse.client import ClickHouse

    s = _settings(args)
    since = queries.parse_since(args.since)
    ch = ClickHouse(s.clickhouse_url, s.clickhouse_database)
    try:
        if args.what == "funnel":
            rows = queries.funnel(ch, args.tenant, since, args.by)
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


# ---------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    from streams.devtools.evaluate import main as evaluate

    res = evaluate(args.truth, args.anomalies, args.funnel)
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


# ---------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    from streams.devtools import bench

    s = _settings(args)
    phases = tuple(p.strip() for p in args.only.split(",")) if args.only else bench.PHASES
    unknown = set(phases) - set(bench.PHASES)
    if unknown:
        print(f"error: unknown bench phase(s) {sorted(unknown)}; choose from {', '.join(bench.PHASES)}",
              file=sys.stderr)
        return 2
    cfg = bench.BenchConfig(events=args.events, partitions=args.partitions, workers=args.workers, rate=args.rate,
                            persons=args.persons, recovery_persons=args.recovery_persons,
                            sla_conversations=args.sla_conversations, sink_rows=args.sink_rows, phases=phases)
    return bench.main(s, cfg, args.json)


# ---------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="touchstream", description="Real-time touchpoint stream processor.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", help="overrides TOUCHSTREAM_DATA_DIR")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output on stderr")
    sub = p.add_subparsers(dest="command", required=True)

    def quiet(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        # SUPPRESS: an omitted sub-command flag must not reset a global --quiet
        sp.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress output on stderr")
        return sp

    k = sub.add_parser("kafka", help="start/stop the local Kafka (KRaft, Maven-resolved jars)")
    k.add_argument("action", choices=["start", "stop"])
    k.add_argument("--nodes", type=int, choices=[1, 3], default=1)
    k.add_argument("--data-dir", help="overrides TOUCHSTREAM_DATA_DIR")
    k.set_defaults(fn=cmd_kafka)

    mg = quiet(sub.add_parser("migrate", help="apply ClickHouse migrations"))
    mg.add_argument("--cluster-ddl", metavar="CLUSTER", help="print the replicated + Distributed DDL instead")
    mg.set_defaults(fn=cmd_migrate)
    sub.add_parser("worker", help="run the stream worker").set_defaults(fn=cmd_worker)

    r = sub.add_parser("run", help="local Kafka + embedded ClickHouse + worker + simulated feed")
    r.add_argument("--duration", type=float, default=None, help="seconds, then stop everything (default: until Ctrl-C)")
    r.add_argument("--rate", type=float, default=100.0, help="simulated events per second")
    r.add_argument("--seed", type=int, default=1)
    r.set_defaults(fn=cmd_run)

    sm = quiet(sub.add_parser("simulate", help="seeded realistic touchpoints, with injected incidents"))
    sm.add_argument("--rate", type=float, default=100.0)
    sm.add_argument("--duration", type=float, default=600.0)
    sm.add_argument("--seed", type=int, default=1)
    sm.add_argument("--out", default="kafka", help="'kafka' (paced live) or a .jsonl path")
    sm.add_argument("--truth", help="write the injected incidents here (JSON)")
    sm.add_argument("--start-ms", help="event time of the first event (default: now)")
    sm.add_argument("--noise", type=float, default=0.0,
                    help="file output: fraction of events followed by a malformed copy (DLQ demo)")
    sm.set_defaults(fn=cmd_simulate)

    pr = quiet(sub.add_parser("process", help="the core offline over a JSON-lines file (also the backfill)"))
    pr.add_argument("input")
    pr.add_argument("--out", required=True)
    pr.set_defaults(fn=cmd_process)

    st = sub.add_parser("status", help="broker, topics, lag and ClickHouse rows")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_status)

    q = sub.add_parser("query", help="answers from ClickHouse: funnel, sla, sessions, anomalies")
    q.add_argument("what", choices=["funnel", "sla", "sessions", "anomalies"])
    q.add_argument("--tenant")
    q.add_argument("--since", default="1h", help="period: 30m, 1h, 7d (default 1h)")
    q.add_argument("--by", choices=["campaign", "channel"], help="funnel: split by dimension")
    q.add_argument("--all", action="store_true", help="anomalies: include resolved ones")
    q.add_argument("--json", action="store_true")
    q.set_defaults(fn=cmd_query)

    ev = sub.add_parser("evaluate", help="anomaly detector recall / false alarms / delay vs simulator truth")
    ev.add_argument("--truth", required=True)
    ev.add_argument("--anomalies", required=True)
    ev.add_argument("--funnel", help="funnel.jsonl of the same run: eligibility and series-days")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(fn=cmd_evaluate)

    b = sub.add_parser("bench", help="bare consumer vs full pipeline, latency, memory, recovery")
    b.add_argument("--events", type=int, default=200_000)
    b.add_argument("--partitions", type=int, default=4)
    b.add_argument("--workers", type=int, default=1,
                   help="pipeline run: 1 = one worker with every role; W >= 2 = W-1 processing + 1 sink worker")
    b.add_argument("--rate", type=float, default=5000.0, help="offered load for the latency run")
    b.add_argument("--persons", type=int, default=100_000, help="active persons for the memory figure")
    b.add_argument("--recovery-persons", type=int, default=1_000_000)
    b.add_argument("--sla-conversations", type=int, default=100_000, help="open conversations for the timer run")
    b.add_argument("--sink-rows", type=int, default=200_000, help="rows per ClickHouse table for the insert run")
    b.add_argument("--only", help="comma-separated phases: pipeline,memory,recovery,sla,sink (default: all)")
    b.add_argument("--json", help="also write the figures to this file")
    b.set_defaults(fn=cmd_bench)

    d = quiet(sub.add_parser("dlq", help="dead-letter tools"))
    d.add_argument("action", choices=["replay"])
    d.add_argument("--reason", help="only messages dead-lettered for this reason")
    d.add_argument("--timeout", type=float, default=10.0, help="stop when no DLQ message arrives for this long")
    d.set_defaults(fn=cmd_dlq)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from streams.logs import setup

    secrets: list[str] = []
    with contextlib.suppress(Exception):  # a bad setting is reported by the command itself
        secrets = _secrets(Settings.from_env())
    setup("human", os.environ.get("TOUCHSTREAM_LOG_LEVEL") or "warning", secrets)
    with contextlib.suppress(KeyboardInterrupt):
        return int(args.fn(args) or 0)
    return 130
