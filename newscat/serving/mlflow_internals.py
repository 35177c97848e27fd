"""The few MLflow internals newscat relies on where no public API does the job, each behind one function here.

Nothing else in newscat reaches into MLflow's private names: when MLflow changes one of these, this module is the
one place to mend, and tests/unit/serving/test_mlflow_internals.py, which runs each function against a real store,
fails first.

Shipped inside every logged model (serving/ goes whole): only mlflow and the standard library are imported here.
"""

from __future__ import annotations

from mlflow.entities import TraceData, TraceInfo
from mlflow.store.tracking.rest_store import RestStore
from mlflow.tracing.client import TracingClient

# The environment variable MLflow's scoring server (`mlflow models serve`, and its container) sets, to the served
# model's path, in the processes that load the model: mlflow.pyfunc.scoring_server._SERVER_MODEL_PATH. Its value is
# copied here rather than imported, as importing that module loads the server's web stack; no public API tells a
# model that a scoring server loads it.
SCORING_SERVER_MODEL_PATH_ENV = "__pyfunc_model_path__"


def upload_trace_data(client: TracingClient, trace_info: TraceInfo, trace_data: TraceData) -> None:
    """Write a trace's spans as the trace's artifact (`traces.json` in its artifact location), for a store that
    refuses `log_spans`: wraps TracingClient._upload_trace_data, the call MLflow's own span exporter falls back to.
    No public API writes a trace's spans but `log_spans`, the very call such a store refuses."""
    client._upload_trace_data(trace_info, trace_data)


def forget_server_version() -> None:
    """Make the next `log_spans` to a tracking server ask the server's version again: wraps the cache_clear of
    RestStore._get_server_version, which `log_spans` consults and which caches, for the whole process, each server's
    answer (a timed-out probe's None too). No public API probes a server's version afresh."""
    RestStore._get_server_version.cache_clear()
