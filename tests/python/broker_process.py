"""Start and stop a real vltava broker process for the end-to-end tests.

The broker is started exactly as a user would start it:

    vltava broker --listeners PLAINTEXT://127.0.0.1:0 --data-dir DIR [--override k=v ...]

With port 0 the broker binds an ephemeral port and prints exactly one line,
``vltava: listening on 127.0.0.1:PORT``, on stdout once it is ready. The
fixture waits for that line (no fixed sleeps), and stops the broker with
SIGTERM at the end of the module (or of the test, for per-test brokers).

Environment:
    VLTAVA_BIN            broker binary (default: <target dir>/debug/vltava, where the
                          target dir is $CARGO_TARGET_DIR or <repo>/target)
    VLTAVA_START_TIMEOUT  seconds to wait for the "listening" line (default 30)
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Optional


REPO_ROOT = Path(__file__).resolve().parents[2]
# Where cargo puts it: $CARGO_TARGET_DIR (relative to the repo root) or <repo>/target.
DEFAULT_BIN = REPO_ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "debug" / "vltava"
LISTENING_RE = re.compile(r"^vltava: listening on (\d{1,3}(?:\.\d{1,3}){3}):(\d+)\s*$")
START_TIMEOUT = float(os.environ.get("VLTAVA_START_TIMEOUT", "30"))
STOP_TIMEOUT = 30.0


def vltava_bin() -> Path:
    return Path(os.environ.get("VLTAVA_BIN", str(DEFAULT_BIN)))


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask the kernel to SIGTERM the broker if the test runner dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class Broker:
    """One running vltava broker process."""

    def __init__(self, data_dir: Path, overrides: Optional[dict] = None, log_path: Optional[Path] = None,
                 port: int = 0, listeners: Optional[str] = None, node_id: Optional[int] = None):
        self.data_dir = Path(data_dir)
        self.listen_port = port
        # A cluster node names its listeners (client and controller) and its node.id.
        self.listeners = listeners
        self.node_id = node_id
        self.overrides = dict(overrides or {})
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / f"{self.data_dir.name}.stderr.log"
        self.proc: Optional[subprocess.Popen] = None
        self.host: Optional[str] = None
        self.port: Optional[int] = None
        self._stdout_lines: list[str] = []
        self._reader: Optional[threading.Thread] = None
        self._log_file = None
        # Set by stop() and kill(): the broker was asked to exit, so an exit is no crash; after
        # kill(), a deliberate crash, its exit code says nothing either.
        self.stopped = False
        self.killed = False

    # -- lifecycle --------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT) -> "Broker":
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        """Starts the process without waiting: a cluster's nodes must all be running before
        any of them is ready (each waits for a quorum)."""
        binary = vltava_bin()
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise RuntimeError(
                f"vltava binary not found or not executable at {binary} "
                "(build it with `cargo build --bin vltava` or set VLTAVA_BIN)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(binary), "broker",
            "--listeners", self.listeners or f"PLAINTEXT://127.0.0.1:{self.listen_port}",
            "--data-dir", str(self.data_dir),
        ]
        if self.node_id is not None:
            cmd += ["--node-id", str(self.node_id)]
        for key, value in self.overrides.items():
            cmd += ["--override", f"{key}={value}"]
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"\n=== starting: {' '.join(cmd)}\n".encode())
        self._log_file.flush()
        # vltava reads VLTAVA_<KEY> variables as broker config: keep the
        # test's own settings (and a developer's shell) out of the broker.
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLTAVA_")}
        env["NO_COLOR"] = "1"  # plain stderr logs, for failure reports
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            preexec_fn=_die_with_parent,
        )
        ready = threading.Event()
        found: dict = {}
        self._ready, self._found = ready, found

        def read_stdout(stream, lines):
            # Keep draining stdout for the life of the process so the broker
            # can never block on a full pipe.
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace")
                lines.append(line)
                if not ready.is_set():
                    m = LISTENING_RE.match(line)
                    if m:
                        found["host"], found["port"] = m.group(1), int(m.group(2))
                        ready.set()
            ready.set()  # EOF: the process exited (or closed stdout)

        self._reader = threading.Thread(
            target=read_stdout, args=(self.proc.stdout, self._stdout_lines), daemon=True
        )
        self._reader.start()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> "Broker":
        """Waits for the "listening" line of a launched broker."""
        ready, found = self._ready, self._found
        if not ready.wait(timeout) or "port" not in found:
            try:
                rc = self.proc.wait(5)  # stdout closed: it is exiting
                what = f"vltava exited with code {rc} before printing 'vltava: listening on HOST:PORT'"
            except subprocess.TimeoutExpired:
                what = f"vltava did not print 'vltava: listening on HOST:PORT' within {timeout:.0f}s"
            self.kill()
            raise RuntimeError(
                f"{what}; stdout={self._stdout_lines!r}\n"
                f"--- stderr ({self.log_path}) ---\n{self.stderr_tail()}"
            )
        self.host, self.port = found["host"], found["port"]
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """SIGTERM, wait for exit, SIGKILL as a last resort. Returns the exit code."""
        if self.proc is None:
            return None
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self._finish()
                raise RuntimeError(f"vltava did not exit within {timeout:.0f}s of SIGTERM; killed it")
        self._finish()
        return self.proc.returncode

    def kill(self) -> Optional[int]:
        """SIGKILL (simulated crash)."""
        if self.proc is None:
            return None
        self.killed = True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._finish()
        return self.proc.returncode

    def _finish(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
        if self._log_file is not None and not self._log_file.closed:
            self._log_file.close()

    # -- helpers ----------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        assert self.port is not None, "broker not started"
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self, n: int = 40) -> str:
        """The end of the broker's stderr, plus the start of any error or
        panic report (whose message comes before a long backtrace)."""
        try:
            lines = self.log_path.read_text("utf-8", "replace").splitlines()
        except OSError:
            return "<no stderr log>"
        tail_start = max(0, len(lines) - n)
        first_error = next((i for i, line in enumerate(lines)
                            if "panicked at" in line or line.startswith("Error:")), None)
        if first_error is None or first_error >= tail_start:
            return "\n".join(lines[tail_start:])
        head = lines[first_error:min(first_error + 20, tail_start)]
        return "\n".join(head + ["[...]"] + lines[tail_start:])


class BrokerFactory:
    """Starts brokers on demand and guarantees they are stopped afterwards."""

    def __init__(self, base_dir: Path):
        self.base_dir = Path(base_dir)
        self.brokers: list[Broker] = []
        self._n = 0

    def new_data_dir(self) -> Path:
        self._n += 1
        d = self.base_dir / f"broker-{self._n}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def start(self, data_dir: Optional[Path] = None, overrides: Optional[dict] = None, port: int = 0) -> Broker:
        """A broker on ``data_dir`` (a new one if None); ``port`` 0 is any free port, another
        value restarts a broker where its clients already point."""
        data_dir = Path(data_dir) if data_dir is not None else self.new_data_dir()
        broker = Broker(data_dir, overrides, log_path=self.base_dir / f"{data_dir.name}.stderr.log", port=port)
        self.brokers.append(broker)
        return broker.start()

    def cluster(self, n: int = 3, overrides: Optional[dict] = None) -> list[Broker]:
        """``n`` nodes in combined mode (broker and metadata-quorum voter each), started together
        as an operator would; returns them once every one serves clients."""
        import socket

        def free_port() -> int:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return s.getsockname()[1]

        ports = [free_port() for _ in range(n)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(ports))
        nodes = []
        for i in range(n):
            o = {
                "controller.quorum.voters": voters,
                "controller.listener.names": "CONTROLLER",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "controller.quorum.election.timeout.ms": "500",
                "broker.session.timeout.ms": "3000",
                "offsets.topic.num.partitions": "3",
            }
            o.update(overrides or {})
            data_dir = self.new_data_dir()
            b = Broker(data_dir, o, log_path=self.base_dir / f"{data_dir.name}.stderr.log",
                       listeners=f"PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{ports[i]}",
                       node_id=i + 1)
            self.brokers.append(b)
            b.launch()
            nodes.append(b)
        for b in nodes:
            b.wait_ready(START_TIMEOUT * 2)
        return nodes

    def close(self) -> None:
        """Stops every broker (SIGTERM), then fails if any of them did not shut down cleanly:
        exited before it was asked to (a crash), exited non-zero or by a signal, or did not
        exit within STOP_TIMEOUT. Brokers a test crashed on purpose with kill() are exempt."""
        problems = []
        for i, b in enumerate(self.brokers):
            if b.proc is None or b.killed:
                b.kill()
                continue
            exited_early = not b.stopped and b.proc.poll() is not None
            try:
                rc = b.stop()
            except Exception as e:  # noqa: BLE001 - every broker is stopped before reporting
                b.kill()
                problems.append((i, b, f"did not shut down: {e}"))
                continue
            if exited_early:
                problems.append((i, b, f"had exited on its own (code {rc}) before the shutdown"))
            elif rc != 0:
                problems.append((i, b, f"exited with code {rc} after SIGTERM (expected a clean 0)"))
        if problems:
            raise BrokerShutdownError("\n\n".join(
                f"broker #{i} ({b.data_dir}) {what}\n--- stderr tail ({b.log_path}) ---\n{b.stderr_tail()}"
                for i, b, what in problems))


class BrokerShutdownError(RuntimeError):
    """A broker crashed, exited non-zero, or hung at shutdown."""
