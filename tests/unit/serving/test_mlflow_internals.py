"""Each MLflow internal newscat relies on (newscat.serving.mlflow_internals) still does its job in the installed
MLflow, against real stores and a real HTTP server: these tests fail first when MLflow changes one of them."""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Span, TraceData, TraceInfo, TraceLocation, TraceState
from mlflow.exceptions import MlflowException
from mlflow.tracing.client import TracingClient
from mlflow.tracing.constant import TRACE_SCHEMA_VERSION, TRACE_SCHEMA_VERSION_KEY, SpansLocation, TraceTagKey

from newscat.serving import tracing
from newscat.serving.mlflow_internals import (
    SCORING_SERVER_MODEL_PATH_ENV,
    forget_server_version,
    upload_trace_data,
)


def _trace(experiment_id: str, name: str) -> tuple[Span, TraceInfo]:
    """A one-span trace as the trace writer builds it, its spans marked as kept in the trace's artifact."""
    trace_id = f"tr-{uuid.uuid4().hex}"
    span = Span.from_dict(
        {
            "trace_id": base64.b64encode(bytes.fromhex(trace_id.removeprefix("tr-"))).decode(),
            "span_id": base64.b64encode(os.urandom(8)).decode(),
            "parent_span_id": None,
            "name": name,
            "start_time_unix_nano": 1_000_000,
            "end_time_unix_nano": 2_000_000,
            "events": [],
            "status": {"code": "STATUS_CODE_OK", "message": ""},
            "attributes": {"mlflow.traceRequestId": json.dumps(trace_id)},
        }
    )
    info = TraceInfo(
        trace_id=trace_id,
        trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=1,
        state=TraceState.OK,
        execution_duration=1,
        trace_metadata={TRACE_SCHEMA_VERSION_KEY: str(TRACE_SCHEMA_VERSION)},
        tags={TraceTagKey.TRACE_NAME: name, TraceTagKey.SPANS_LOCATION: SpansLocation.ARTIFACT_REPO.value},
    )
    return span, info


def test_uploaded_trace_data_is_the_trace_that_get_trace_reads(tracking_uri: str, tmp_path: Path) -> None:
    experiment_id = mlflow.MlflowClient(tracking_uri).create_experiment(
        "internals", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    client = TracingClient(tracking_uri)
    span, info = _trace(experiment_id, "newscat.probe")
    stored = client.start_trace(info)
    with pytest.raises(MlflowException, match="missing span data"):  # the info alone
        mlflow.MlflowClient(tracking_uri).get_trace(info.trace_id)

    upload_trace_data(client, stored, TraceData(spans=[span]))

    trace = mlflow.MlflowClient(tracking_uri).get_trace(info.trace_id)
    assert [s.name for s in trace.data.spans] == ["newscat.probe"]
    assert trace.data.spans[0].span_id == span.span_id and trace.data.spans[0].trace_id == info.trace_id


class _Server(BaseHTTPRequestHandler):
    """Answers MLflow's version probe with `version`, counting the probes; refuses everything else."""

    version = "3.3.0"
    probes = 0

    def do_GET(self) -> None:
        if self.path.split("?")[0].endswith("/version"):
            type(self).probes += 1
            self._answer(200, self.version.encode())
        else:
            self._answer(404, b"{}")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(404, b'{"error_code": "ENDPOINT_NOT_FOUND", "message": "no spans here"}')

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Server.version, _Server.probes = "3.3.0", 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    forget_server_version()  # no earlier test's probe
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        forget_server_version()


def test_log_spans_asks_the_servers_version_again_only_once_it_is_forgotten(server: str) -> None:
    client = TracingClient(server)
    span, _ = _trace("1", "newscat.probe")
    with pytest.raises(NotImplementedError, match=r"3\.3\.0 is less than 3\.4"):
        client.log_spans("1", [span])
    _Server.version = "3.5.0"  # the server is upgraded
    with pytest.raises(NotImplementedError, match=r"3\.3\.0 is less than 3\.4"):
        client.log_spans("1", [span])  # MLflow's cached answer
    assert _Server.probes == 1

    forget_server_version()

    with pytest.raises(Exception, match="no spans here"):  # past the version check: the spans were sent
        client.log_spans("1", [span])
    assert _Server.probes == 2


def test_the_scoring_servers_variable_is_mlflows() -> None:
    from mlflow.pyfunc.scoring_server import _SERVER_MODEL_PATH

    assert SCORING_SERVER_MODEL_PATH_ENV == _SERVER_MODEL_PATH == tracing.SCORING_SERVER_ENV
