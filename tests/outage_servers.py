"""Servers for outage tests (imported as `tests.outage_servers`): a real `mlflow server` that a test can stop, a tiny
HTTP server that answers 500 to everything, and a proxy in front of a real server that fails chosen requests."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.helpers import SERVER_WORKERS, free_port, tool_env

# A client that gives up at once: the tests wait for no retry back-off (MLflow's default retries for minutes).
NO_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


class MlflowServer:
    """A real `mlflow server` on a sqlite backend in `root`, on a free port; `stop()` ends it (as an outage)."""

    def __init__(self, root: Path, backend: str) -> None:
        self.root, self.backend = root, backend
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self, ready_s: float = 180) -> MlflowServer:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = ["mlflow", "server", "--backend-store-uri", self.backend, "-h", "127.0.0.1", "-p", str(port)]
        command += ["--workers", str(SERVER_WORKERS)]
        command += ["--artifacts-destination", str(self.root / "served-artifacts")]
        log = (self.root / f"server-{port}.log").open("w")
        self.process = subprocess.Popen(
            command, cwd=self.root, env=tool_env(self.backend), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready(ready_s, self.root / f"server-{port}.log")
        except BaseException:
            self.stop()  # never leave a server behind a failed start
            raise
        return self

    def _wait_ready(self, ready_s: float, log_path: Path) -> None:
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log_path.read_text()[-3000:]
            try:
                if requests.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or still starting its workers
                pass
            time.sleep(0.5)
        pytest.fail(f"mlflow server did not answer /health within {ready_s:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def _answering(status: int) -> type[BaseHTTPRequestHandler]:
    class Answer(BaseHTTPRequestHandler):
        """What a broken (or refusing) server does: the same status to every request, whatever its method."""

        def _fail(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"Internal Server Error" if status == 500 else b"Unauthorized"
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _fail

        def log_message(self, *args: object) -> None:  # quiet
            pass

    return Answer


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def answering(status: int = 500) -> AbstractContextManager[str]:
    """A real HTTP server (in a thread) that answers `status` to everything; the context gives its URL."""
    return _serving(_answering(status))


# A fault: given the method and the path with its query, None forwards the request; "500" answers 500; "drop" closes
# the connection unanswered (as a server that died mid-request).
Fault = Callable[[str, str], str | None]


@contextmanager
def faulty_proxy(target: Callable[[], str], fault: Fault) -> Iterator[str]:
    """A proxy to the server at `target()` (read at each request: a restarted server may move) that injects `fault`;
    the context gives its URL."""

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            action = fault(self.command, self.path)
            if action == "drop":
                self.close_connection = True
                return
            if action == "500":
                self._answer(500, b"Internal Server Error", {"Content-Type": "text/plain"})
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            try:
                answer = requests.request(
                    self.command, target() + self.path, data=body, headers=headers, timeout=60, allow_redirects=False
                )
            except requests.ConnectionError:  # the server behind is gone: so is the answer
                self.close_connection = True
                return
            kept = {k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "location")}
            self._answer(answer.status_code, answer.content, kept)

        def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

        def log_message(self, *args: object) -> None:
            pass

    with _serving(Proxy) as url:
        yield url
