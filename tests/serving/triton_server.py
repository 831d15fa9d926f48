"""A real Triton Inference Server for tests: the ``tritonserver`` binary that the ``nvidia-pytriton`` wheel ships.

The wheel carries the server, its Python backend and one backend stub per Python version; this starts the
binary directly (pytriton's own wrapper is not used) on loopback, on free ports, with the repository's
``stablemtl`` model loaded explicitly (the binary has no onnxruntime or tensorrt backend, so the component
models are left unloaded), and waits on the HTTP health endpoint. :func:`unavailable` says why a server
cannot run here, for the tests' skip reasons.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

STARTUP_S = 60.0
VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


#: Where `make setup` puts the wheel: its own folder in the venv, off the import path.
SETUP_TARGET = Path(sys.prefix) / "tritonserver" / "pytriton"


def _dist() -> Path | None:
    """The wheel's ``tritonserver`` folder: from `make setup`'s folder, else an installed ``pytriton``."""
    if SETUP_TARGET.is_dir():
        return SETUP_TARGET / "tritonserver"
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "tritonserver"


def unavailable() -> str | None:
    """Why no server can start here (None when one can)."""
    if importlib.util.find_spec("tritonclient") is None:
        return "tritonclient is not installed (pip install 'stablemtl-edge[triton]')"
    dist = _dist()
    if dist is None:
        return "the nvidia-pytriton wheel, which ships the tritonserver binary, is not installed"
    if not (dist / "bin" / "tritonserver").is_file():
        return f"{dist} holds no bin/tritonserver"
    if not (dist / "python_backend_stubs" / VERSION / "triton_python_backend_stub").is_file():
        return f"nvidia-pytriton ships no Python-backend stub for Python {VERSION}"
    return None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class TritonServer:
    """``with TritonServer(repo, tmp) as server:`` -> ``server.http`` / ``server.grpc`` addresses."""

    def __init__(self, repository: Path, workdir: Path, models: tuple[str, ...] = ("stablemtl",)) -> None:
        self.repository, self.workdir, self.models = Path(repository), Path(workdir), models
        self.process: subprocess.Popen | None = None
        self.log = self.workdir / "tritonserver.log"
        self.returncode: int | None = None

    def _backends(self) -> Path:
        dist = _dist()
        assert dist is not None
        python = self.workdir / "backends" / "python"
        python.mkdir(parents=True, exist_ok=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            (python / name).symlink_to(dist / "backends" / "python" / name)
        shutil.copy(dist / "python_backend_stubs" / VERSION / "triton_python_backend_stub", python)
        return python.parent

    def __enter__(self) -> TritonServer:
        dist = _dist()
        assert dist is not None
        http, grpc, metrics = _free_ports(3)
        self.http, self.grpc, self.metrics = f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", f"127.0.0.1:{metrics}"
        env = dict(os.environ)
        libs = dist.parent.parent / "nvidia_pytriton.libs"  # the wheel's vendored shared libraries
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the stub's Python: this venv
        env["_ROS_WHEELS_BOOTSTRAP_COMPLETE"] = "1"  # the ROS wheels' .pth re-execs Python, which a stub cannot
        cmd = [str(dist / "bin" / "tritonserver"), f"--model-repository={self.repository}",
               f"--backend-directory={self._backends()}", "--model-control-mode=explicit",
               *(f"--load-model={m}" for m in self.models), "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
               "--metrics-address=127.0.0.1", f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}",
               "--exit-timeout-secs=10", "--log-verbose=0"]
        self._log_file = open(self.log, "wb")
        self.process = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log_file.close()
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.http}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        self.__exit__(None, None, None)
        raise RuntimeError(f"tritonserver not ready after {STARTUP_S:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc: object) -> None:
        """SIGTERM, as a container runtime stops it; the server drains and exits 0."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.returncode = self.process.returncode
        self._log_file.close()
