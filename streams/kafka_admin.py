"""Thin admin helpers over aiokafka: topic creation, end offsets, consumer-group lag.

Why not let the broker auto-create topics: auto-created topics get the broker's default
partition count and replication, and the pipeline's correctness (tenant-keyed single writer,
changelog co-partitioning) depends on every pipeline topic having the same, chosen count.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.structs import TopicPartition

from streams.settings import Settings


def client_kwargs(settings: Settings | None) -> dict[str, Any]:
    """Security pass-through (SASL/SCRAM, TLS) shared by every aiokafka client we create."""
    if settings is None or settings.kafka_security_protocol == "PLAINTEXT":
        return {}
    kw: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        kw["ssl_context"] = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_sasl_mechanism:
        kw["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kw["sasl_plain_username"] = settings.kafka_sasl_username
        kw["sasl_plain_password"] = settings.kafka_sasl_password
    return kw


class BrokerUnreachable(RuntimeError):
    """Kafka cannot be used with these settings; the message is one line saying what to change."""


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        out.append((host.strip("[]") or "localhost", int(port) if port.isdigit() else 9092))
    return out


def _reason(exc: BaseException, host: str, port: int, settings: Settings | None) -> tuple[str, bool]:
    """(what went wrong and what to change, whether it is final: retrying another node cannot help)."""
    where = f"{host}:{port}"
    proto = settings.kafka_security_protocol if settings is not None else "PLAINTEXT"
    if isinstance(exc, kafka_errors.SaslAuthenticationFailed | kafka_errors.AuthenticationFailedError):
        user = settings.kafka_sasl_username if settings is not None else None
        mech = settings.kafka_sasl_mechanism if settings is not None else None
        return (f"Kafka at {where} refused the credentials of KAFKA_SASL_USERNAME={user} ({mech}): "
                "check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD", True)
    if isinstance(exc, kafka_errors.UnsupportedSaslMechanismError | kafka_errors.AuthenticationMethodNotSupported):
        mech = settings.kafka_sasl_mechanism if settings is not None else None
        return f"Kafka at {where} does not accept KAFKA_SASL_MECHANISM={mech} ({exc})", True
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the TLS certificate of Kafka at {where} is not trusted ({exc.verify_message}): set "
                "KAFKA_SSL_CAFILE to the CA that signed it", True)
    if isinstance(exc, ssl.SSLError):
        return (f"TLS with Kafka at {where} failed ({exc.reason or exc}): is KAFKA_SECURITY_PROTOCOL={proto} "
                "what this listener speaks?", False)
    if isinstance(exc, TimeoutError):
        return (f"no answer from Kafka at {where} (KAFKA_SECURITY_PROTOCOL={proto}: a TLS listener spoken to "
                "in plaintext, or a firewall?)", False)
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing listens at {where}", False
    if isinstance(exc, OSError):
        return f"cannot connect to {where} ({exc.strerror or exc})", False
    return (f"Kafka at {where} closed the connection ({type(exc).__name__}: {exc}): is "
            f"KAFKA_SECURITY_PROTOCOL={proto} what this listener expects?", False)


async def check_broker(settings: Settings, timeout: float = 10.0) -> None:
    """Connect to a bootstrap server the way every client will (TLS, SASL), or raise
    :class:`BrokerUnreachable` with the reason. The CLI calls this before it creates any client:
    aiokafka's own bootstrap failure says only "Unable to bootstrap", and a client that failed to
    start is left unclosed (a warning at exit); the reason (refused, TLS, credentials) is lost."""
    reasons = []
    for host, port in _hosts(settings.bootstrap):
        try:
            conn = await asyncio.wait_for(
                create_conn(host, port, request_timeout_ms=int(timeout * 1000), **client_kwargs(settings)), timeout)
        except Exception as exc:  # classified below: every failure becomes one line
            reason, final = _reason(exc, host, port, settings)
            if final:
                raise BrokerUnreachable(reason) from exc
            reasons.append(reason)
            continue
        conn.close()
        return
    where = ("KAFKA_BOOTSTRAP_SERVERS" if settings.kafka_bootstrap
             else "the local broker: KAFKA_BOOTSTRAP_SERVERS is unset")
    hint = ("start it with `touchstream kafka start` (or use `touchstream run`)" if not settings.kafka_bootstrap
            else "check KAFKA_BOOTSTRAP_SERVERS, or unset it to use the local broker")
    raise BrokerUnreachable(f"cannot reach Kafka at {settings.bootstrap} ({where}): {'; '.join(reasons)}; {hint}")


async def _with_admin(bootstrap: str, settings: Settings | None, fn: Any, timeout: float = 10.0) -> Any:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000), **client_kwargs(settings)
    )
    await asyncio.wait_for(admin.start(), timeout)
    try:
        return await asyncio.wait_for(fn(admin), timeout)
    finally:
        await admin.close()


async def delete_topics_with_prefix(bootstrap: str, prefixes: Iterable[str], settings: Settings | None = None,
                                   timeout: float = 30.0) -> list[str]:
    """Delete every topic whose name starts with one of ``prefixes``; returns the names deleted."""
    wanted = tuple(prefixes)

    async def go(admin: AIOKafkaAdminClient) -> list[str]:
        names = sorted(t for t in await admin.list_topics() if wanted and t.startswith(wanted))
        if names:
            await admin.delete_topics(names)
        return names

    return list(await _with_admin(bootstrap, settings, go, timeout))


def cluster_brokers(bootstrap: str, timeout: float = 5.0, settings: Settings | None = None) -> int:
    async def go(admin: AIOKafkaAdminClient) -> int:
        return len((await admin.describe_cluster())["brokers"])

    return asyncio.run(_with_admin(bootstrap, settings, go, timeout))


def coordinator_ready(bootstrap: str, timeout: float = 5.0, settings: Settings | None = None) -> bool:
    """Does the broker name a group coordinator yet? On a new cluster the first consumer group
    creates ``__consumer_offsets``; until its partitions have leaders every join fails and aiokafka
    logs each attempt as an ERROR, which is all a newcomer would see in the first seconds of
    ``touchstream run``."""
    async def go(admin: AIOKafkaAdminClient) -> bool:
        try:
            await admin.find_coordinator(f"__touchstream_probe_{uuid.uuid4().hex[:8]}")
        except kafka_errors.KafkaError:  # coordinator not available yet
            return False
        return True

    return bool(asyncio.run(_with_admin(bootstrap, settings, go, timeout)))


def can_replicate(bootstrap: str, replication: int, timeout: float = 10.0, settings: Settings | None = None) -> bool:
    """Can the controller place ``replication`` replicas right now? (A throw-away topic is created
    and deleted.) Metadata can list a broker that the controller has not registered yet or has
    fenced for a missed heartbeat on a loaded machine; topic creation is what workers need."""
    name = f"__touchstream_probe_{uuid.uuid4().hex[:8]}"

    async def go(admin: AIOKafkaAdminClient) -> bool:
        resp = await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=replication)])
        ok = all(code == 0 for _, code, *_ in resp.topic_errors)
        if ok:
            await admin.delete_topics([name])
        return ok

    return bool(asyncio.run(_with_admin(bootstrap, settings, go, timeout)))


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int,
    replication: int,
    settings: Settings | None = None,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Create missing topics (``configs``: topic-level settings per topic); returns the names
    created. Existing topics are left as they are."""
    wanted = list(dict.fromkeys(topics))
    per_topic = configs or {}

    async def go(admin: AIOKafkaAdminClient) -> list[str]:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            new = [
                NewTopic(
                    t,
                    num_partitions=partitions,
                    replication_factor=replication,
                    topic_configs=dict(per_topic.get(t, {})),
                )
                for t in missing
            ]
            resp = await admin.create_topics(new)
            for name, code, *_ in resp.topic_errors:
                if code not in (0, 36):  # 36 = TOPIC_ALREADY_EXISTS (a concurrent creator won)
                    raise RuntimeError(f"creating topic {name} failed with Kafka error code {code}")
        return missing

    created = await _with_admin(bootstrap, settings, go, timeout=30.0)
    # Metadata propagates asynchronously; wait until every topic has leaders before returning.
    if created:
        await wait_for_leaders(bootstrap, created, settings)
    return created


async def wait_for_leaders(bootstrap: str, topics: list[str], settings: Settings | None, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async def go(admin: AIOKafkaAdminClient) -> bool:
            meta = await admin.describe_topics(topics)
            return all(
                t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
                for t in meta
            )

        if await _with_admin(bootstrap, settings, go):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"topics {topics} have no leaders after {timeout}s")
        await asyncio.sleep(0.2)


async def describe(bootstrap: str, group_ids: Iterable[str], settings: Settings | None = None,
                   timeout: float = 5.0, prefix: str = "") -> dict[str, Any]:
    """Topics (those starting with ``prefix``) with partition counts and end offsets, and lag per
    consumer group (for `status`). Topics whose metadata is not ready (no leader yet, being
    deleted) are skipped rather than failing the whole report."""

    async def topics_of(admin: AIOKafkaAdminClient) -> tuple[list[Any], dict[str, dict[TopicPartition, int]]]:
        meta = await admin.describe_topics()
        committed: dict[str, dict[TopicPartition, int]] = {}
        for gid in group_ids:
            try:
                offs = await admin.list_consumer_group_offsets(gid)
            except Exception:  # group unknown yet: no lag to report
                offs = {}
            committed[gid] = {tp: om.offset for tp, om in offs.items() if om.offset >= 0}
        return meta, committed

    meta, committed = await _with_admin(bootstrap, settings, topics_of, timeout)
    tps = [
        TopicPartition(t["topic"], p["partition"])
        for t in meta
        if not t["topic"].startswith("__") and t["topic"].startswith(prefix) and t["error_code"] == 0
        and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
        for p in t["partitions"]
    ]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **client_kwargs(settings))
    await asyncio.wait_for(consumer.start(), timeout)
    try:
        ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout) if tps else {}
        starts = await asyncio.wait_for(consumer.beginning_offsets(tps), timeout) if tps else {}
    finally:
        await consumer.stop()
    topics: dict[str, dict[str, Any]] = {}
    for tp in sorted(ends, key=lambda x: (x.topic, x.partition)):
        entry = topics.setdefault(tp.topic, {"partitions": 0, "end_offsets": {}, "messages": 0})
        entry["partitions"] += 1
        entry["end_offsets"][str(tp.partition)] = ends[tp]
        entry["messages"] += ends[tp]
    lag: dict[str, dict[str, int]] = {}
    for gid, offs in committed.items():
        per_topic: dict[str, int] = {}
        consumed = {tp.topic for tp in offs}
        # A partition of a consumed topic without a committed offset counts in full: "lag 0" must
        # mean every partition is done, not that the unfinished one has not committed yet.
        for tp, end in ends.items():
            if tp.topic in consumed:
                off = offs.get(tp, starts.get(tp, 0))
                per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, end - off)
        lag[gid] = per_topic
    return {"topics": topics, "lag": lag}
