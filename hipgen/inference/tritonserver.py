"""Start a real ``tritonserver`` (the one the ``nvidia-pytriton`` wheel ships) for tests and local runs.

DESIGN §4 asks for integration tests against a real Triton rather than a mock; this follows the recipe
in reference/triton-on-cpu.md: a backend directory of links to the wheel's python backend and the stub
for this Python, the venv's ``bin/`` first on PATH (the stub finds the venv's numpy and onnxruntime
through it), 127.0.0.1 only, free ports, a unique shared-memory prefix so parallel servers do not
collide, a bounded wait for readiness, SIGTERM (then SIGKILL) at the end. Serve a repository written by
``hipgen.inference.triton_repo`` with target ``python``: that build has no onnxruntime backend.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path


class TritonServerNotInstalledError(FileNotFoundError):
    """No ``tritonserver`` binary (install the ``nvidia-pytriton`` wheel)."""


class TritonServerStartError(RuntimeError):
    """tritonserver exited or did not become ready in time; the message ends with its log."""


def tritonserver_home() -> Path:
    """``site-packages/pytriton/tritonserver`` of the ``nvidia-pytriton`` wheel (found without importing
    ``pytriton``, whose dependencies were not installed); raises TritonServerNotInstalledError."""
    spec = importlib.util.find_spec("pytriton")
    for location in (spec.submodule_search_locations or []) if spec else []:
        home = Path(location) / "tritonserver"
        if (home / "bin" / "tritonserver").is_file():
            return home
    raise TritonServerNotInstalledError(
        "no tritonserver binary: install the nvidia-pytriton wheel (it ships "
        "site-packages/pytriton/tritonserver/bin/tritonserver)"
    )


def backend_directory(home: Path, target: Path) -> Path:
    """``target/python/`` with links to the wheel's python backend and this Python's stub."""
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonServerNotInstalledError(
            f"the tritonserver wheel has no python backend stub for Python {version}"
        )
    backend = home / "backends" / "python"
    for src in (backend / "libtriton_python.so", backend / "triton_python_backend_utils.py", stub):
        link = python_dir / src.name
        if not link.exists():
            link.symlink_to(src)
    return target


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


_PORT_ATTEMPTS = 3
# No proxy: an HTTP(S)_PROXY in the environment must not route the 127.0.0.1 readiness probe elsewhere.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _ready(http_port: int) -> bool:
    try:
        with _NO_PROXY.open(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the server (it unloads models and ends its python stubs), SIGKILL its process group if it
    does not exit in time (the group is the server's own: it was started in a new session)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@contextlib.contextmanager
def running_tritonserver(
    repository: str | os.PathLike[str],
    *,
    ready_timeout_s: float = 60.0,
    models: Sequence[str] | None = None,
    extra_args: Sequence[str] = (),
    log_path: str | os.PathLike[str] | None = None,
) -> Iterator[str]:
    """Run tritonserver over ``repository`` (every model, or ``models``) and yield its gRPC address
    ``127.0.0.1:<port>``; the server stops when the block ends.

    Raises TritonServerNotInstalledError without the binary, TritonServerStartError (with the server's
    log) when it exits or is not ready within ``ready_timeout_s``.
    """
    home = tritonserver_home()
    with tempfile.TemporaryDirectory(prefix="hipgen-triton-") as tmp:
        backends = backend_directory(home, Path(tmp) / "backends")
        log = Path(log_path) if log_path else Path(tmp) / "tritonserver.log"
        shm_prefix = f"hipgen{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        loads = [f"--load-model={m}" for m in models] if models else ["--load-model=*"]
        env = {**os.environ, "PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
        for attempt in range(_PORT_ATTEMPTS):
            grpc_port, http_port, metrics_port = _free_ports(3)
            cmd = [
                str(home / "bin" / "tritonserver"),
                f"--model-repository={Path(repository).resolve()}",
                f"--backend-directory={backends}",
                "--model-control-mode=explicit",
                *loads,
                "--grpc-address=127.0.0.1",
                f"--grpc-port={grpc_port}",
                "--http-address=127.0.0.1",
                f"--http-port={http_port}",
                "--metrics-address=127.0.0.1",
                f"--metrics-port={metrics_port}",
                "--allow-gpu-metrics=false",
                "--exit-timeout-secs=5",
                f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
                *extra_args,
            ]
            with open(log, "wb") as log_file:
                proc = subprocess.Popen(
                    cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
            try:
                _wait_ready(proc, http_port, ready_timeout_s, log)
                break
            except TritonServerStartError:
                _stop(proc, timeout_s=15)
                # another process took a port between picking and binding it: pick others
                if attempt + 1 < _PORT_ATTEMPTS and "already in use" in _tail(log).lower():
                    continue
                raise
            except BaseException:  # Ctrl-C while waiting: leave no server behind
                _stop(proc, timeout_s=15)
                raise
        try:
            yield f"127.0.0.1:{grpc_port}"
        finally:
            _stop(proc, timeout_s=15)
            for leftover in Path("/dev/shm").glob(f"{shm_prefix}*"):  # after a SIGKILL
                with contextlib.suppress(OSError):
                    leftover.unlink()


def _wait_ready(proc: subprocess.Popen[bytes], http_port: int, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not _ready(http_port):
        if proc.poll() is not None:
            raise TritonServerStartError(
                f"tritonserver exited with code {proc.returncode} before it was ready:\n{_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise TritonServerStartError(f"tritonserver was not ready within {timeout_s:g} s:\n{_tail(log)}")
        time.sleep(0.1)
