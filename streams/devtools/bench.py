"""``touchstream bench``: the physical limit of Python here vs the full pipeline, side by side.

On the local real broker, in one run, on the same pre-produced topic:
1. bare: an aiokafka consumer fetching in batches and decoding with orjson, nothing else;
2. pipeline: validate → identity → sessions → SLA → funnel → enriched topic → ClickHouse,
   measured from start of consumption until the sink committed everything (events/s);
3. latency at a fixed offered load (paced producer, each event's ``occurred_at`` set to the wall
   clock when it is sent, as a live feed): raw append → enriched append, p50/p99, from Kafka's
   own record timestamps (the raw topic's LogAppendTime, the enriched record's CreateTime: the
   same host clock);
4. memory: peak RSS of the worker process, and bytes per active person / open conversation
   measured on the core in-process (tracemalloc);
5. recovery: kill -9 a worker holding N persons of state, restart, time until it processes again
   (static membership, ``TOUCHSTREAM_INSTANCE_ID``, as a supervisor restarting it in place);
   and the same kill -9 after the pipeline run (its state), the everyday case.
Prints one table; ``--json FILE`` writes the same figures.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from streams.app import topics
from streams.core.contract import parse_timestamp
from streams.kafka_admin import delete_topics_with_prefix, describe
from streams.settings import Settings

log = logging.getLogger(__name__)


def synthetic_events(n: int, start_ms: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    """The simulator's realistic mix (message sizes, keys, tenants), truncated to n events."""
    from streams.devtools.simulate import SimConfig, generate

    rate = max(50.0, n / 600)
    cfg = SimConfig(rate=rate, duration_s=n / rate * 1.2 + 60, seed=seed, start_ms=start_ms)
    for i, ev in enumerate(generate(cfg)):
        if i >= n:
            return
        yield ev


async def _produce(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]], rate: float | None = None,
                   live: bool = False) -> None:
    """``rate``: paced to that many events per second; ``live``: each event's ``occurred_at`` is
    rewritten to the wall clock when it is sent (a live feed, not a replay of history)."""
    from streams.core.contract import format_timestamp

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5 if rate is None else 0, acks="all",
                         enable_idempotence=True, max_batch_size=262_144)
    await p.start()
    try:
        t0 = time.monotonic()
        pending = []
        for i, (k, v) in enumerate(payloads):
            if rate is not None:
                due = t0 + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if live:
                ev = orjson.loads(v)
                ev["occurred_at"] = format_timestamp(time.time_ns() // 1_000_000)
                v = orjson.dumps(ev)
            pending.append(await p.send(topic, value=v, key=k))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await p.flush()
    finally:
        await p.stop()


async def bare_consumer(bootstrap: str, topic: str, expected: int) -> float:
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-bare-{uuid.uuid4().hex[:6]}",
                         auto_offset_reset="earliest", enable_auto_commit=False, max_partition_fetch_bytes=4 << 20,
                         fetch_max_bytes=32 << 20)
    await c.start()
    try:
        n = 0
        t0 = None
        loads = orjson.loads
        while n < expected:
            batch = await c.getmany(timeout_ms=1000, max_records=10_000)
            if t0 is None and batch:
                t0 = time.perf_counter()
            for msgs in batch.values():
                for m in msgs:
                    loads(m.value)
                n += len(msgs)
        return n / (time.perf_counter() - (t0 or time.perf_counter()))
    finally:
        await c.stop()


async def _lag(bootstrap: str, group: str, topic: str) -> int | None:
    info = await describe(bootstrap, [group], prefix=topic)
    lag = info["lag"].get(group, {})
    return lag.get(topic)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_peak_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        fh = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=self.env, stdout=fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        fh.close()

    def tail(self, n: int = 4000) -> str:
        """The end of the worker's log (the work dir, and with it the log, goes with the run)."""
        return self.log.read_bytes()[-n:].decode(errors="replace")

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:  # a hung shutdown is a finding: report it, then kill
                print(f"[bench] worker {self.proc.pid} ignored SIGTERM for 60 s; killing it. Log tail:\n{self.tail()}",
                      file=sys.stderr, flush=True)
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


async def _wait(pred: Any, timeout: float, what: str, *workers: Worker) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await pred():
                return
        except (TimeoutError, KafkaError) as exc:  # a busy broker answers an admin query late: ask again
            log.info("bench: %s not known yet (%r)", what, exc)
        for worker in workers:
            if worker.proc is not None and worker.proc.poll() is not None:
                raise RuntimeError(f"bench: a worker exited ({worker.proc.returncode}) while waiting for {what}; "
                                   f"the end of its log:\n{worker.tail()}")
        await asyncio.sleep(0.2)
    raise TimeoutError(f"bench: timed out waiting for {what}")


def core_memory(persons: int, conversations: int) -> tuple[float, float]:
    """Bytes per active person and per open conversation, measured on the core with tracemalloc."""
    from streams.core.contract import validate
    from streams.core.pipeline import Pipeline

    def person_event(i: int) -> bytes:
        return orjson.dumps({"event_id": f"m{i}", "tenant_id": "bench", "channel": "web", "type": "page_view",
                             "occurred_at": "2026-01-01T00:00:00Z", "identities": {"anonymous_id": f"a{i}"},
                             "campaign": {"name": "c"}})

    def conv_event(i: int) -> bytes:
        return orjson.dumps({"event_id": f"c{i}", "tenant_id": "bench", "channel": "whatsapp", "type": "message_in",
                             "occurred_at": "2026-01-01T00:00:00Z", "identities": {"whatsapp_id": f"+49{i}"},
                             "conversation": {"id": f"conv{i}", "team": "support"}})

    def measure(make: Any, n: int) -> float:
        """State held per person (or conversation) at steady state: the batch's changes drained
        to the changelog writer (its dirty set is empty again), the funnel minute closed (its
        distinct-person sets are per window, not per person), sessions and waits still open."""
        tracemalloc.start()
        pipeline = Pipeline()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            tp = validate(make(i), now_ms=None)
            pipeline.process(tp)  # type: ignore[arg-type]
            if i % 1000 == 0:
                pipeline.drain()
        # eight minutes later one more event moves the tenant's watermark past the funnel minute:
        # its windows close, the sessions (30 min gap) stay open
        later = orjson.loads(make(n))
        later["occurred_at"] = "2026-01-01T00:08:00Z"
        pipeline.process(validate(orjson.dumps(later), now_ms=None))  # type: ignore[arg-type]
        pipeline.tick(parse_timestamp("2026-01-01T00:08:00Z"), wall=False)
        pipeline.drain()
        for store in pipeline.stores.values():
            store.drain_dirty()
        pipeline.end_batch()
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        del pipeline
        return used / n

    return measure(person_event, persons), measure(conv_event, conversations)


PHASES = ("pipeline", "memory", "recovery", "sla", "sink")


@dataclass(frozen=True)
class BenchConfig:
    events: int = 200_000
    partitions: int = 4
    workers: int = 1  # 1: one worker with every role; W ≥ 2: W − 1 processing workers + 1 sink worker
    rate: float = 5000.0  # offered load of the latency run
    persons: int = 100_000  # active persons / open conversations for the memory figures
    recovery_persons: int = 1_000_000
    sla_conversations: int = 100_000
    sink_rows: int = 200_000
    phases: tuple[str, ...] = PHASES


#: Topic name prefixes of this process's runs (their topics and the workers' internal ones),
#: deleted when the bench ends: every run makes ~16 topics, and a local broker kept them all.
_RUNS: list[str] = []


def _new_run(kind: str) -> tuple[str, str]:
    """A fresh topic prefix and app id for one phase, remembered for clean-up."""
    prefix, app_id = f"{kind}{uuid.uuid4().hex[:6]}.", f"{kind}-{uuid.uuid4().hex[:6]}"
    _RUNS.extend((prefix, app_id + "-"))
    return prefix, app_id


async def _drop_runs(s: Settings) -> None:
    try:
        gone = await delete_topics_with_prefix(s.bootstrap, _RUNS, s)
        log.info("bench: deleted %d topics of its runs", len(gone))
    except Exception as exc:  # clean-up must not hide the figures
        print(f"[bench] could not delete the run topics ({exc!r})", file=sys.stderr)
    _RUNS.clear()


async def run_bench(s: Settings, cfg: BenchConfig, work: Path) -> dict[str, Any]:
    try:
        return await _run_phases(s, cfg, work)
    finally:
        await _drop_runs(s)


async def _run_phases(s: Settings, cfg: BenchConfig, work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"partitions": cfg.partitions, "phases": list(cfg.phases)}
    if "pipeline" in cfg.phases:
        result.update(await pipeline_phase(s, cfg.events, cfg.partitions, cfg.rate, work, cfg.workers))
    if "memory" in cfg.phases:
        per_person, per_conv = core_memory(cfg.persons, cfg.persons)
        result["bytes_per_active_person"] = round(per_person)
        result["bytes_per_open_conversation"] = round(per_conv)
        result["mb_per_100k_persons"] = round(per_person * 100_000 / 1e6, 1)
        result["mb_per_100k_conversations"] = round(per_conv * 100_000 / 1e6, 1)
        _progress(result)
    if "recovery" in cfg.phases:
        result.update(await _recovery(s, cfg.recovery_persons, cfg.partitions, work))
        _progress(result)
    if "sla" in cfg.phases:
        result.update(await sla_timers(s, cfg.sla_conversations, cfg.partitions, work))
        _progress(result)
    if "sink" in cfg.phases:
        from streams.devtools.bench_sink import sink_rows_per_s

        url = f"chdb://{work / 'sink-bench'}"
        for table, rate in sink_rows_per_s(url, "bench", cfg.sink_rows, s.sink_batch_rows).items():
            result[f"sink_rows_per_s_{table}"] = round(rate)
        _progress(result)
    return result


def _pipeline_workers(s: Settings, prefix: str, app_id: str, partitions: int, workers: int,
                      work: Path) -> list[Worker]:
    """One worker with every role, or W − 1 processing workers sharing the partitions plus one
    sink worker: the embedded ClickHouse engine belongs to one process, as in production with
    ``TOUCHSTREAM_ROLE`` (with a ClickHouse server several sink workers could share the load)."""
    if workers <= 1:
        return [Worker(_worker_env(s, prefix, app_id, work / "worker", partitions, TOUCHSTREAM_INSTANCE_ID="w0"),
                       work / "worker.log")]
    out = [Worker(_worker_env(s, prefix, app_id, work / f"process-{i}", partitions, TOUCHSTREAM_ROLE="process",
                              TOUCHSTREAM_INSTANCE_ID=f"p{i}"),
                  work / f"process-{i}.log") for i in range(workers - 1)]
    out.append(Worker(_worker_env(s, prefix, app_id, work / "sink", partitions, TOUCHSTREAM_ROLE="sink",
                                  TOUCHSTREAM_INSTANCE_ID="sink"), work / "sink.log"))
    return out


async def offline_rate(feed: Path, work: Path) -> float:
    """``touchstream process`` over the same events, in a process of its own: events per second."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams", "-q", "process", str(feed), "--out", str(work / "offline"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"touchstream process failed: {err.decode()[-2000:]}")
    return float(orjson.loads(out.splitlines()[-1])["events_per_s"])


async def restart_after_kill(s: Settings, prefix: str, w: Worker, tenants: list[str]) -> float:
    """kill -9 ``w``, start it again (same instance id: static membership), and time until one new
    live event per tenant comes out enriched: how long the pipeline stops after a crash."""
    from streams.core.contract import format_timestamp

    before = await describe(s.bootstrap, [], prefix=prefix)
    enriched_before = before["topics"].get(prefix + topics.ENRICHED, {}).get("messages", 0)
    w.stop(kill=True)
    t0 = time.perf_counter()
    w.start()
    now = format_timestamp(int(time.time() * 1000))
    probes = [(t.encode(), orjson.dumps({
        "event_id": f"kill-probe-{i}", "tenant_id": t, "occurred_at": now, "channel": "web", "type": "page_view",
        "identities": {"anonymous_id": f"kill-probe-{i}"}})) for i, t in enumerate(tenants)]
    await _produce(s.bootstrap, prefix + topics.RAW, probes)

    async def out() -> bool:
        info = await describe(s.bootstrap, [], prefix=prefix)
        return info["topics"].get(prefix + topics.ENRICHED, {}).get("messages", 0) >= enriched_before + len(probes)

    await _wait(out, 600, "processing after kill -9", w)
    return time.perf_counter() - t0


async def pipeline_phase(s: Settings, events: int, partitions: int, rate: float, work: Path,
                         workers: int = 1) -> dict[str, Any]:
    prefix, app_id = _new_run("bench")
    group = {t: topics.consumer_group(app_id, t) for t in (topics.RAW, topics.VALID, topics.ENRICHED)}
    raw = prefix + topics.RAW
    await _topics(s, prefix, app_id, partitions)
    # the run's event times end about now, so the latency run that follows (live event times)
    # continues them: a jump of an hour would close every session of the first run in one tick
    rate_guess = max(50.0, events / 600)
    start_ms = int(time.time() * 1000) - int((events / rate_guess * 1.2 + 60) * 1000)
    generated = list(synthetic_events(events, start_ms))
    payloads = [(e["tenant_id"].encode(), orjson.dumps(e)) for e in generated]
    events = len(payloads)
    continue_ms = max(parse_timestamp(e["occurred_at"]) for e in generated) + 1000
    tenants = sorted({e["tenant_id"] for e in generated})
    del generated
    feed = work / "bench-feed.jsonl"
    feed.write_bytes(b"\n".join(v for _, v in payloads) + b"\n")
    await _produce(s.bootstrap, raw, payloads)
    result: dict[str, Any] = {"events": events, "partitions": partitions, "workers": workers}

    # 1. bare consumer
    result["bare_events_per_s"] = round(await bare_consumer(s.bootstrap, raw, events))
    _progress(result)
    # the same events through the offline core (touchstream process), for comparison
    result["offline_events_per_s"] = round(await offline_rate(feed, work))
    _progress(result)

    # 2. full pipeline on the same topic
    ws = _pipeline_workers(s, prefix, app_id, partitions, workers, work)
    t0 = time.perf_counter()
    for w in ws:
        w.start()
    try:
        first_out: list[float] = []

        async def drained() -> bool:
            info = await describe(s.bootstrap, sorted(set(group.values())), prefix=prefix)
            lag = info["lag"]
            if not first_out and info["topics"].get(prefix + topics.ENRICHED, {}).get("messages"):
                first_out.append(time.perf_counter())  # workers up, partitions assigned, first output
            return all(lag.get(g, {}).get(prefix + t) == 0 for t, g in group.items())

        await _wait(drained, 1800, "pipeline to drain", *ws)
        t_end = time.perf_counter()
        elapsed = t_end - t0
        result["pipeline_events_per_s"] = round(events / elapsed)
        result["pipeline_seconds_incl_startup"] = round(elapsed, 2)
        if first_out:
            result["pipeline_events_per_s_after_start"] = round(events / max(1e-3, t_end - first_out[0]))
        result["ratio"] = round(result["pipeline_events_per_s"] / result["bare_events_per_s"], 3)
        _progress(result)

        # 3. latency at a fixed offered load
        n_lat = int(rate * 20)
        lat_payloads = [(e["tenant_id"].encode(), orjson.dumps(e))
                        for e in synthetic_events(n_lat, continue_ms, seed=2)]
        ports = [w.env["TOUCHSTREAM_WEB_PORT"] for w in ws]
        before = [_scrape(p) for p in ports]
        await _produce(s.bootstrap, raw, lat_payloads, rate=rate, live=True)
        await _wait(drained, 600, "latency run to drain", *ws)
        for i, (port, prior) in enumerate(zip(ports, before, strict=True)):
            # where the tail comes from: loop stalls, batch and tick durations during the latency run
            figures = _stall_figures(prior, _scrape(port))
            result.update({(f"w{i}_" if len(ws) > 1 else "") + k: round(v, 1) for k, v in figures.items()})
        lats = await _latencies(s.bootstrap, prefix, {orjson.loads(v)["event_id"] for _, v in lat_payloads})
        lats.sort()
        result["latency_offered_events_per_s"] = rate
        result["latency_p50_ms"] = round(lats[len(lats) // 2], 1) if lats else None
        result["latency_p99_ms"] = round(lats[int(len(lats) * 0.99)], 1) if lats else None
        rss = {w.log.stem: _rss_peak_mb(w.proc.pid) for w in ws if w.proc}
        result["peak_rss_mb"] = round(max(rss.values()), 1) if rss else None
        if len(rss) > 1:  # per role: which side holds the memory
            result["peak_rss_mb_all_workers"] = round(sum(rss.values()), 1)
            result.update({f"peak_rss_mb_{name.replace('-', '_')}": round(mb, 1) for name, mb in rss.items()})
        _progress(result)

        # 4. kill -9 the processing worker holding this run's state, restart it in place
        result["kill9_to_processing_s"] = round(await restart_after_kill(s, prefix, ws[0], tenants), 2)
        _progress(result)
    finally:
        for w in ws:
            w.stop()
    return result


def _progress(result: dict[str, Any]) -> None:
    """Figures as they are measured, so a later phase failing does not lose them."""
    print("[bench] " + orjson.dumps(result).decode(), file=sys.stderr, flush=True)


async def _latencies(bootstrap: str, prefix: str, ids: set[str]) -> list[float]:
    async def read(topic: str) -> dict[str, int]:
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
        await c.start()
        try:
            c._client.add_topic(topic)
            await c._client.force_metadata_update()
            parts = c.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in parts]
            c.assign(tps)
            ends = await c.end_offsets(tps)
            # explicit offsets: seek_to_beginning right after assign() raced the initial position
            # lookup and left partitions at their end (nothing read, no latency figure)
            for tp, start in (await c.beginning_offsets(tps)).items():
                c.seek(tp, start)
            out: dict[str, int] = {}
            pending = {tp for tp in tps if ends[tp] > 0}
            while pending:  # by position, not by seeing the last offset (it may be a control record)
                batch = await c.getmany(*pending, timeout_ms=1000, max_records=20_000)
                for msgs in batch.values():
                    for m in msgs:
                        eid = orjson.loads(m.value)["event_id"]
                        if eid in ids:
                            out[eid] = m.timestamp
                pending = {tp for tp in pending if await c.position(tp) < ends[tp]}
            return out
        finally:
            await c.stop()

    raw_ts = await read(prefix + topics.RAW)
    enr_ts = await read(prefix + topics.ENRICHED)
    return [float(enr_ts[e] - raw_ts[e]) for e in enr_ts if e in raw_ts]


async def _topics(s: Settings, prefix: str, app_id: str, partitions: int) -> None:
    """The run's topics as a worker creates them (raw with LogAppendTime, a compacted changelog)."""
    from dataclasses import replace

    await topics.ensure_all(replace(s, topic_prefix=prefix, app_id=app_id, partitions=partitions))


async def _recovery(s: Settings, persons: int, partitions: int, work: Path) -> dict[str, Any]:
    prefix, app_id = _new_run("rec")
    await _topics(s, prefix, app_id, partitions)
    raw = prefix + topics.RAW
    base = "2026-01-01T00:00:00Z"
    payloads = [(f"t{i % 8}".encode(), orjson.dumps({
        "event_id": f"r{i}", "tenant_id": f"t{i % 8}", "occurred_at": base, "channel": "web", "type": "page_view",
        "identities": {"anonymous_id": f"a{i}"}})) for i in range(persons)]
    await _produce(s.bootstrap, raw, payloads)
    env = _worker_env(s, prefix, app_id, work / "recovery", partitions, TOUCHSTREAM_ROLE="process",
                      TOUCHSTREAM_INSTANCE_ID=f"{app_id}-w1")
    w = Worker(env, work / "recovery.log")
    w.start()
    await _wait(lambda: _lag_zero(s.bootstrap, app_id, prefix + topics.VALID), 1800, "state build-up", w)
    w.stop(kill=True)
    # one new event per tenant after the restart: recovery is over when they come out enriched
    probe = [(f"t{k}".encode(), orjson.dumps({
        "event_id": f"probe{k}", "tenant_id": f"t{k}", "occurred_at": base, "channel": "web", "type": "page_view",
        "identities": {"anonymous_id": "a1"}})) for k in range(8)]
    before = await describe(s.bootstrap, [], prefix=prefix)
    enriched_before = before["topics"].get(prefix + topics.ENRICHED, {}).get("messages", 0)
    t0 = time.perf_counter()
    w2 = Worker(env, work / "recovery2.log")
    w2.start()
    await _produce(s.bootstrap, raw, probe)

    async def probes_out() -> bool:
        info = await describe(s.bootstrap, [], prefix=prefix)
        return info["topics"].get(prefix + topics.ENRICHED, {}).get("messages", 0) >= enriched_before + 8

    try:
        await _wait(probes_out, 1800, "recovery", w2)
        recovery_s = time.perf_counter() - t0
    finally:
        w2.stop()
    return {"recovery_persons": persons, "recovery_s": round(recovery_s, 2)}


async def sla_timers(s: Settings, conversations: int, partitions: int, work: Path,
                     target_s: int = 60, spread_s: float = 40.0) -> dict[str, Any]:
    """Breach timers under load: ``conversations`` live-chat waits opened within ``spread_s``,
    all still open when the first deadline comes (first-reply target ``target_s``). Lateness of a
    breach = Kafka append time of its ``sla.events`` record − its due time (what a pager sees,
    before notifier delivery)."""
    prefix, app_id = _new_run("sla")
    await _topics(s, prefix, app_id, partitions)
    env = _worker_env(s, prefix, app_id, work / "sla", partitions)
    w = Worker(env, work / "sla.log")
    w.start()
    try:
        await _wait(lambda: _ready(env["TOUCHSTREAM_WEB_PORT"]), 120, "SLA worker to be ready", w)
        rate = conversations / spread_s
        t0 = time.time()

        p = AIOKafkaProducer(bootstrap_servers=s.bootstrap, linger_ms=5, acks="all", enable_idempotence=True,
                             max_batch_size=262_144)
        await p.start()
        try:
            pending = []
            for i in range(conversations):
                due = t0 + i / rate
                if due - time.time() > 0.005:
                    await asyncio.sleep(due - time.time())
                now = int(time.time() * 1000)
                ev = {"event_id": f"s{i}", "tenant_id": f"t{i % 8}", "channel": "live_chat", "type": "message_in",
                      "occurred_at": _iso(now), "identities": {"anonymous_id": f"visitor{i}"},
                      "conversation": {"id": f"conv{i}", "team": f"team{i % 5}"}}
                pending.append(await p.send(prefix + topics.RAW, value=orjson.dumps(ev), key=f"t{i % 8}".encode()))
                if len(pending) >= 2000:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
        finally:
            await p.stop()
        produced_s = time.time() - t0

        async def breaches_out() -> bool:
            info = await describe(s.bootstrap, [], prefix=prefix)
            return info["topics"].get(prefix + topics.SLA_EVENTS, {}).get("messages", 0) >= 2 * conversations

        await _wait(breaches_out, target_s + spread_s + 600, "every warning and breach", w)
        peak_rss = _rss_peak_mb(w.proc.pid) if w.proc else None
    finally:
        w.stop()
    late = await _breach_lateness(s.bootstrap, prefix + topics.SLA_EVENTS)
    late.sort()
    return {
        "sla_open_conversations": conversations,
        "sla_feed_seconds": round(produced_s, 1),
        "sla_breaches": len(late),
        "sla_fire_late_p50_ms": round(late[len(late) // 2]) if late else None,
        "sla_fire_late_p99_ms": round(late[int(len(late) * 0.99)]) if late else None,
        "sla_fire_late_max_ms": round(late[-1]) if late else None,
        "sla_worker_peak_rss_mb": round(peak_rss, 1) if peak_rss else None,
    }


def _iso(ms: int) -> str:
    from streams.core.contract import format_timestamp

    return format_timestamp(ms)


async def _breach_lateness(bootstrap: str, topic: str) -> list[float]:
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-sla-{uuid.uuid4().hex[:6]}",
                         auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    try:
        out: list[float] = []
        idle = 0
        while idle < 3:
            batch = await c.getmany(timeout_ms=1000, max_records=20_000)
            idle = 0 if batch else idle + 1
            for msgs in batch.values():
                for m in msgs:
                    rec = orjson.loads(m.value)
                    if rec["event"] == "breach":
                        out.append(float(m.timestamp - rec["due_at"]))
        return out
    finally:
        await c.stop()


def _scrape(port: str) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """The worker's histogram buckets from /metrics: (metric, labels without le) → [(le, count)]."""
    import re
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for m in re.finditer(r"^(touchstream_\w+)_bucket\{([^}]*)\} (\S+)$", text, re.M):
        name, labels, count = m.groups()
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        le = float(pairs.pop("le"))
        key = ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items()))
        out.setdefault((name, key), []).append((le, float(count)))
    return out


def _stall_figures(before: dict[tuple[str, str], list[tuple[float, float]]],
                   after: dict[tuple[str, str], list[tuple[float, float]]]) -> dict[str, float]:
    """p99 (upper bucket bound) and count of each histogram over the interval between two scrapes."""
    out: dict[str, float] = {}
    wanted = ("touchstream_event_loop_lag_seconds", "touchstream_batch_seconds", "touchstream_clock_tick_seconds")
    for (name, labels), buckets in after.items():
        if name not in wanted:
            continue
        prior = dict(before.get((name, labels), []))
        counts = [(le, c - prior.get(le, 0.0)) for le, c in buckets]
        total = counts[-1][1] if counts else 0
        if total <= 0:
            continue
        p99 = next(le for le, c in counts if c >= 0.99 * total)
        label = labels.split('"')[1] if '"' in labels else ""
        key = name.removeprefix("touchstream_").removesuffix("_seconds") + (f"_{label}" if label else "")
        out[f"{key}_p99_ms"] = p99 * 1000
        out[f"{key}_count"] = total
    return out


async def _ready(port: str) -> bool:
    """The worker's /ready: partitions assigned, state recovered, ClickHouse reachable."""
    import urllib.error
    import urllib.request

    def get() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return await asyncio.to_thread(get)


def _worker_env(s: Settings, prefix: str, app_id: str, data: Path, partitions: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOUCHSTREAM_", "CLICKHOUSE_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=s.bootstrap, TOUCHSTREAM_TOPIC_PREFIX=prefix, TOUCHSTREAM_APP_ID=app_id,
               TOUCHSTREAM_DATA_DIR=str(data), TOUCHSTREAM_PARTITIONS=str(partitions),
               TOUCHSTREAM_WEB_PORT=str(_free_port()), TOUCHSTREAM_LOG_LEVEL="warning",
               TOUCHSTREAM_MAX_FUTURE_S="100000000", **extra)
    return env


async def _lag_zero(bootstrap: str, group: str, topic: str) -> bool:
    return (await _lag(bootstrap, group, topic)) == 0


def print_table(res: dict[str, Any]) -> None:
    rows = [
        ("events", res.get("events")),
        ("1. bare consumer (events/s)", res.get("bare_events_per_s")),
        (f"2. full pipeline, {res.get('workers', 1)} worker(s) (events/s incl. start)",
         res.get("pipeline_events_per_s")),
        ("   after the first output (events/s)", res.get("pipeline_events_per_s_after_start")),
        ("   ratio pipeline / bare", res.get("ratio")),
        ("   offline core, touchstream process (events/s)", res.get("offline_events_per_s")),
        (f"3. latency p50 at {res.get('latency_offered_events_per_s')} ev/s (ms)", res.get("latency_p50_ms")),
        ("   latency p99 (ms)", res.get("latency_p99_ms")),
        ("4. worker peak RSS (MB)", res.get("peak_rss_mb")),
        ("   all workers (MB)", res.get("peak_rss_mb_all_workers")),
        ("   bytes per active person", res.get("bytes_per_active_person")),
        ("   MB per 100k active persons", res.get("mb_per_100k_persons")),
        ("   bytes per open conversation", res.get("bytes_per_open_conversation")),
        ("   MB per 100k open conversations", res.get("mb_per_100k_conversations")),
        ("   kill -9 → processing again, pipeline run's state (s)", res.get("kill9_to_processing_s")),
        (f"5. recovery with {res.get('recovery_persons')} persons (s)", res.get("recovery_s")),
        (f"6. SLA breach lateness p50, {res.get('sla_open_conversations')} open conversations (ms)",
         res.get("sla_fire_late_p50_ms")),
        ("   SLA breach lateness p99 (ms)", res.get("sla_fire_late_p99_ms")),
        ("   SLA breach lateness max (ms)", res.get("sla_fire_late_max_ms")),
        *[(f"7. ClickHouse insert rows/s: {k.removeprefix('sink_rows_per_s_')}", v)
          for k, v in res.items() if k.startswith("sink_rows_per_s_")],
    ]
    rows = [r for r in rows if r[1] is not None]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


def main(s: Settings, cfg: BenchConfig, json_out: str | None) -> int:
    from streams.localkafka import LocalKafka

    started = None
    if s.kafka_bootstrap is None:
        started = LocalKafka(s.kafka_dir, nodes=1, base_port=s.kafka_port)
        started.start()
    try:
        keep = os.environ.get("TOUCHSTREAM_BENCH_KEEP")  # a directory: keep worker logs and data there
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            res = asyncio.run(run_bench(s, cfg, Path(keep)))
        else:
            with tempfile.TemporaryDirectory(prefix="ts-bench-") as work:
                res = asyncio.run(run_bench(s, cfg, Path(work)))
    finally:
        if started is not None:
            started.stop()
    res["median_of"] = 1
    print_table(res)
    if json_out:
        Path(json_out).write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    return 0
