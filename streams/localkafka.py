"""Starts and stops a real Apache Kafka 4 (KRaft) on 127.0.0.1 from Maven-resolved jars.

Why this exists: machines here have Java and Maven but no Docker, and integration tests must
hit a real broker. The jars are resolved once with ``mvn`` (``streams/localkafka.pom.xml``, package
data, so an installed ``touchstream`` can start it too) into the
data dir; each node is one JVM in combined broker+controller mode, started detached with its
pid recorded so ``stop`` (or a crashed test run's next ``start``) can clean up.

Layout under ``<data dir>/kafka``: ``libs-<version>/`` (jars), ``node-<id>/`` (server.properties,
log4j2.yaml, data/, server.log, pid), ``cluster.json`` (what runs).

**Secured** (``secure=True``, ``touchstream kafka start --secure``): the client listener speaks
SASL_SSL with SCRAM-SHA-512, as production brokers do, so the clients' security settings are
exercised for real (tests/integration/test_secured_broker.py). At the first start a CA and a
broker certificate for 127.0.0.1/localhost are made with ``openssl`` under ``tls/``, and the SCRAM
users (``broker`` for inter-broker traffic, ``touchstream`` for clients) are created by Kafka's own
storage tool when it formats the node (``--add-scram``). Passwords are random; ``client.env``
(mode 600) holds the client settings: ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*``,
``KAFKA_SSL_CAFILE``, ``KAFKA_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.settings import Settings

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


SCRAM = "SCRAM-SHA-512"
CLIENT_USER = "touchstream"
BROKER_USER = "broker"


@dataclass(frozen=True)
class Tls:
    """The secured cluster's material: CA, broker keystore, SCRAM passwords (see the module doc)."""

    dir: Path
    keystore_password: str
    broker_password: str
    client_password: str

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.dir / "broker.p12"


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run([_require("openssl", "install OpenSSL (apt-get install openssl)"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise KafkaLaunchError(f"openssl {args[0]} failed: {(proc.stdout + proc.stderr)[-1000:]}")


def ensure_tls(base_dir: Path) -> Tls:
    """Make (once) a CA, a broker certificate signed by it for 127.0.0.1 and localhost in a PKCS12
    keystore, and the random passwords; later starts reuse them (the SCRAM users live in the
    formatted metadata, so their passwords must not change)."""
    d = base_dir / "tls"
    secrets_file = d / "secrets.json"
    if secrets_file.exists() and (d / "broker.p12").exists() and (d / "ca.pem").exists():
        return Tls(d, **json.loads(secrets_file.read_text()))
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    os.chmod(d, 0o700)
    pw = {k: secrets.token_urlsafe(18) for k in ("keystore_password", "broker_password", "client_password")}
    days = "825"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", days,
             "-subj", "/CN=touchstream local CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-addext", "subjectKeyIdentifier=hash", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
             "-subj", "/CN=localhost", cwd=d)
    (d / "broker.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "broker.pem", "-days", days, "-extfile", "broker.ext", cwd=d)
    _openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
             "-name", "broker", "-out", "broker.p12", "-passout", f"pass:{pw['keystore_password']}", cwd=d)
    for name in ("ca.key", "broker.key", "broker.csr"):
        os.chmod(d / name, 0o600)
    secrets_file.write_text(json.dumps(pw))
    os.chmod(secrets_file, 0o600)
    return Tls(d, **pw)


def _security_lines(node: Node, tls: Tls | None) -> list[str]:
    if tls is None:
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{node.broker_port},CONTROLLER://127.0.0.1:{node.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{node.broker_port}",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        ]
    jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{BROKER_USER}" '
            f'password="{tls.broker_password}";')
    return [
        f"listeners=SASL_SSL://127.0.0.1:{node.broker_port},CONTROLLER://127.0.0.1:{node.controller_port}",
        f"advertised.listeners=SASL_SSL://127.0.0.1:{node.broker_port}",
        "inter.broker.listener.name=SASL_SSL",
        "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        f"sasl.enabled.mechanisms={SCRAM}",
        f"sasl.mechanism.inter.broker.protocol={SCRAM}",
        f"listener.name.sasl_ssl.{SCRAM.lower()}.sasl.jaas.config={jaas}",
        "ssl.keystore.type=PKCS12",
        f"ssl.keystore.location={tls.keystore}",
        f"ssl.keystore.password={tls.keystore_password}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={tls.ca}",
        "ssl.client.auth=none",
    ]


def _properties(node: Node, nodes: list[Node], tls: Tls | None = None) -> str:
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)
    rf = min(3, len(nodes))
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node.node_id}",
            f"controller.quorum.voters={voters}",
            *_security_lines(node, tls),
            "controller.listener.names=CONTROLLER",
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
        secure: bool = False,
    ):
        if nodes not in (1, 3):
            raise KafkaLaunchError("--nodes must be 1 or 3")
        self.secure = secure
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
        return cls(base_dir, nodes=meta["nodes"], base_port=meta["base_port"], version=meta["version"],
                   secure=bool(meta.get("secure")))

    def tls(self) -> Tls | None:
        return ensure_tls(self.base_dir) if self.secure else None

    def client_env(self) -> dict[str, str]:
        """The environment a client needs for this cluster (streams/settings.py variables)."""
        env = {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}
        tls = self.tls()
        if tls is not None:
            env.update(KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_MECHANISM=SCRAM,
                       KAFKA_SASL_USERNAME=CLIENT_USER, KAFKA_SASL_PASSWORD=tls.client_password,
                       KAFKA_SSL_CAFILE=str(tls.ca))
        return env

    def client_settings(self) -> Settings:
        from streams.settings import Settings

        return Settings.from_env(self.client_env())

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
        before = LocalKafka.from_state(self.base_dir)
        if before is not None and before.secure != self.secure and any(
                (n.dir / "data" / "meta.properties").exists() for n in self.nodes):
            mode = "secured (SASL_SSL)" if before.secure else "plaintext"
            raise KafkaLaunchError(f"{self.base_dir} holds a {mode} cluster: its users and listeners were set when "
                                   "it was formatted; use another --data-dir (TOUCHSTREAM_DATA_DIR) for the other mode")
        cluster_file = self.base_dir / "cluster-id"
        if not cluster_file.exists():
            cluster_file.write_text(uuid.uuid4().hex[:22])
        (self.base_dir / "cluster.json").write_text(json.dumps(
            {"nodes": len(self.nodes), "base_port": self.nodes[0].broker_port, "version": self.version,
             "secure": self.secure}))
        if self.secure:
            env_file = self.base_dir / "client.env"
            env_file.write_text("".join(f"{k}={v}\n" for k, v in self.client_env().items()))
            os.chmod(env_file, 0o600)
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
        tls = self.tls()
        props.write_text(_properties(node, self.nodes, tls))
        if tls is not None:
            os.chmod(props, 0o600)  # holds the keystore and inter-broker passwords
        (node.dir / "log4j2.yaml").write_text(_LOG4J.format(log=node.dir / "server.log"))
        if not (node.dir / "data" / "meta.properties").exists():
            cluster_id = (self.base_dir / "cluster-id").read_text().strip()
            scram = [] if tls is None else [
                arg for user, pw in ((BROKER_USER, tls.broker_password), (CLIENT_USER, tls.client_password))
                for arg in ("--add-scram", f"{SCRAM}=[name={user},password={pw}]")]
            fmt = subprocess.run(
                _java_cmd(libs, node, ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                                       *scram], heap_mb=256),
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
        from streams.kafka_admin import (  # local import: keeps `kafka stop` light
            can_replicate,
            cluster_brokers,
            coordinator_ready,
        )

        settings = self.client_settings() if self.secure else None
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if cluster_brokers(self.bootstrap, timeout=5.0, settings=settings) >= len(self.nodes) and (
                    len(self.nodes) == 1 or can_replicate(self.bootstrap, len(self.nodes), settings=settings)
                ) and coordinator_ready(self.bootstrap, settings=settings):
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
        shutil.rmtree(self.base_dir / "tls", ignore_errors=True)
        for name in ("cluster-id", "cluster.json", "client.env"):
            with contextlib.suppress(FileNotFoundError):
                (self.base_dir / name).unlink()
