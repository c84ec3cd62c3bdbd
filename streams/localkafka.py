"""Starts and stops a real Apache Kafka 4 (KRaft) on 127.0.0.1 from Maven-resolved jars.

Why this exists: machines here have Java and Maven but no Docker, and integration tests must
hit a real broker. The jars are resolved once with ``mvn`` (``streams/localkafka.pom.xml``, package
data, so an installed ``touchstream`` can start it too) into the
data dir; each node is one JVM in combined broker+controller mode, started detached with its
pid recorded so ``stop`` (or a crashed test run's next ``start``) can clean up.

Layout under ``<data dir>/kafka``: ``libs-<version>/`` (jars), ``node-<id>/`` (server.properties,
log4j2.yaml, data/, server.log, pid), ``cluster.json`` (what runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

KAFKA_VERSION = os.environ.get("TOUCHSTREAM_KAFKA_VERSION", "4.1.2")
POM = Path(str(files("streams").joinpath("localkafka.pom.xml")))
PORT_STEP = 10  # node i listens on base + PORT_STEP*(i-1) (broker) and +1 (controller)

_LOG4J = """Configuration:
  Appenders:
    File:
      name: FILE
      fileName: "{log}"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: FILE
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.controller
        level: WARN
      - name: state.change.logger
        level: WARN
"""


class KafkaLaunchError(RuntimeError):
    """A clear, actionable reason the local broker could not start."""


@dataclass(frozen=True)
class Node:
    node_id: int
    broker_port: int
    controller_port: int
    dir: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"


def _nodes(base_dir: Path, count: int, base_port: int) -> list[Node]:
    return [
        Node(i, base_port + PORT_STEP * (i - 1), base_port + PORT_STEP * (i - 1) + 1, base_dir / f"node-{i}")
        for i in range(1, count + 1)
    ]


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise KafkaLaunchError(f"`{tool}` not found on PATH: {hint}")
    return path


def ensure_jars(base_dir: Path, version: str = KAFKA_VERSION) -> Path:
    """Resolve the broker jars with Maven once; later calls reuse the directory."""
    libs = base_dir / f"libs-{version}"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = _require("mvn", "install Maven (apt-get install maven); it fetches the Kafka jars")
    if not POM.exists():
        raise KafkaLaunchError(f"broker pom not found at {POM}")
    tmp = base_dir / f"libs-{version}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [
        mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}", f"-Dkafka.version={version}", "-DincludeScope=runtime",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise KafkaLaunchError(f"mvn could not resolve Kafka {version} (exit {proc.returncode}):\n{tail}")
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    marker.touch()
    return libs


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _properties(node: Node, nodes: list[Node]) -> str:
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)
    rf = min(3, len(nodes))
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node.node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://127.0.0.1:{node.broker_port},CONTROLLER://127.0.0.1:{node.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{node.broker_port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={node.dir / 'data'}",
            "num.partitions=4",
            f"default.replication.factor={rf}",
            f"offsets.topic.replication.factor={rf}",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={min(2, rf)}",
            f"min.insync.replicas={min(2, rf)}",
            "offsets.topic.num.partitions=8",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "message.max.bytes=4194304",
            "log.retention.hours=168",
            "log.segment.bytes=67108864",
            "unclean.leader.election.enable=false",
            "",
        ]
    )


def _java_cmd(libs: Path, node: Node, main: list[str], heap_mb: int = 512) -> list[str]:
    java = _require("java", "install a JDK 17+ (apt-get install openjdk-17-jre-headless)")
    return [
        java,
        f"-Xmx{heap_mb}m",
        "-Xms128m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={node.dir / 'log4j2.yaml'}",
        "-cp",
        f"{libs}/*",
        *main,
    ]


class LocalKafka:
    """A 1- or 3-node KRaft cluster under one directory; start/stop are idempotent."""

    def __init__(
        self,
        base_dir: Path,
        nodes: int = 1,
        base_port: int = 19092,
        version: str = KAFKA_VERSION,
        libs_root: Path | None = None,
    ):
        if nodes not in (1, 3):
            raise KafkaLaunchError("--nodes must be 1 or 3")
        self.base_dir = Path(base_dir)
        # jars can be shared by several clusters (tests start throw-away clusters)
        self.libs_root = Path(libs_root) if libs_root else self.base_dir
        self.version = version
        self.nodes = _nodes(self.base_dir, nodes, base_port)

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    @classmethod
    def from_state(cls, base_dir: Path) -> LocalKafka | None:
        """The cluster a previous ``start`` recorded, so ``stop`` needs no flags."""
        state = Path(base_dir) / "cluster.json"
        if not state.exists():
            return None
        meta = json.loads(state.read_text())
        return cls(base_dir, nodes=meta["nodes"], base_port=meta["base_port"], version=meta["version"])

    def _pid(self, node: Node) -> int | None:
        try:
            return int((node.dir / "pid").read_text())
        except (OSError, ValueError):
            return None

    def running(self, node: Node) -> bool:
        pid = self._pid(node)
        return pid is not None and _pid_alive(pid)

    def start(self, timeout: float = 90.0) -> str:
        libs = ensure_jars(self.libs_root, self.version)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        cluster_file = self.base_dir / "cluster-id"
        if not cluster_file.exists():
            cluster_file.write_text(uuid.uuid4().hex[:22])
        (self.base_dir / "cluster.json").write_text(
            json.dumps({"nodes": len(self.nodes), "base_port": self.nodes[0].broker_port, "version": self.version})
        )
        for node in self.nodes:
            self.start_node(node.node_id, libs=libs, wait=False)
        self.wait_ready(timeout)
        return self.bootstrap

    def start_node(self, node_id: int, libs: Path | None = None, wait: bool = True, timeout: float = 60.0) -> None:
        node = self.nodes[node_id - 1]
        if self.running(node):
            return
        libs = libs or ensure_jars(self.libs_root, self.version)
        for port in (node.broker_port, node.controller_port):
            if _port_open(port):
                raise KafkaLaunchError(
                    f"port {port} is already in use by another process; stop it or set TOUCHSTREAM_KAFKA_PORT"
                )
        node.dir.mkdir(parents=True, exist_ok=True)
        props = node.dir / "server.properties"
        props.write_text(_properties(node, self.nodes))
        (node.dir / "log4j2.yaml").write_text(_LOG4J.format(log=node.dir / "server.log"))
        if not (node.dir / "data" / "meta.properties").exists():
            cluster_id = (self.base_dir / "cluster-id").read_text().strip()
            fmt = subprocess.run(
                _java_cmd(libs, node, ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
                          heap_mb=256),
                capture_output=True, text=True, timeout=120,
            )
            if fmt.returncode != 0:
                raise KafkaLaunchError(f"formatting node {node.node_id} failed:\n{(fmt.stdout + fmt.stderr)[-2000:]}")
        out = open(node.dir / "stdout.log", "ab")  # noqa: SIM115 - handed to the child process
        proc = subprocess.Popen(
            _java_cmd(libs, node, ["kafka.Kafka", str(props)]),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        out.close()
        (node.dir / "pid").write_text(str(proc.pid))
        if wait:
            self._wait_port(node, timeout)

    def _wait_port(self, node: Node, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running(node):
                log = (node.dir / "stdout.log").read_text(errors="replace")[-2000:]
                raise KafkaLaunchError(f"Kafka node {node.node_id} exited during start:\n{log}")
            if _port_open(node.broker_port):
                return
            time.sleep(0.2)
        raise KafkaLaunchError(f"Kafka node {node.node_id} did not open port {node.broker_port} in {timeout:.0f}s")

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Ports open is not enough: wait until the cluster answers metadata with all brokers."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            self._wait_port(node, max(1.0, deadline - time.monotonic()))
        from streams.kafka_admin import can_replicate, cluster_brokers  # local import: keeps `kafka stop` light

        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if cluster_brokers(self.bootstrap, timeout=5.0) >= len(self.nodes) and (
                    len(self.nodes) == 1 or can_replicate(self.bootstrap, len(self.nodes))
                ):
                    return
            except Exception as exc:  # broker still starting: retry until the deadline
                last = exc
            time.sleep(0.5)
        raise KafkaLaunchError(f"Kafka cluster not ready after {timeout:.0f}s: {last!r}")

    def stop_node(self, node_id: int, kill: bool = False, timeout: float = 30.0) -> None:
        node = self.nodes[node_id - 1]
        pid = self._pid(node)
        if pid is None or not _pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                (node.dir / "pid").unlink()
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            (node.dir / "pid").unlink()

    def stop(self) -> None:
        # Stop brokers in reverse so the last controller standing sees the others leave cleanly.
        for node in reversed(self.nodes):
            self.stop_node(node.node_id)

    def remove_data(self) -> None:
        self.stop()
        for node in self.nodes:
            shutil.rmtree(node.dir, ignore_errors=True)
        for name in ("cluster-id", "cluster.json"):
            with contextlib.suppress(FileNotFoundError):
                (self.base_dir / name).unlink()
