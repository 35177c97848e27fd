"""A team's tracking server: `mlflow server --app-name basic-auth` with a PostgreSQL backend store and proxied
artifacts (`--artifacts-destination`), reached only over HTTP. Only accounts with the right permission can register
or promote; for an authenticated user the whole flow works through it: tune, register, promote, serve."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from newscat.cli import server_refusal
from tests.helpers import CLASSES, SERVER_WORKERS, running, serve_model, tiny_project, tool_env

pytestmark = pytest.mark.integration
ADMIN = ("admin", "admin-password-for-tests")
VIEWER = ("viewer", "viewer-password-for-tests")
MODEL = "newscat-auth"


@dataclass(frozen=True)
class AuthServer:
    url: str
    root: Path

    def env(self, account: tuple[str, str] | None) -> dict[str, str]:
        env = tool_env(self.url)
        env.pop("MLFLOW_TRACKING_USERNAME", None)
        env.pop("MLFLOW_TRACKING_PASSWORD", None)
        if account:
            env.update(MLFLOW_TRACKING_USERNAME=account[0], MLFLOW_TRACKING_PASSWORD=account[1])
        return env

    def newscat(self, account: tuple[str, str] | None, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["newscat", *args], cwd=self.root, env=self.env(account), capture_output=True, text=True, timeout=600
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, postgres_database: Callable[[], str]) -> Iterator[AuthServer]:
    root = tmp_path_factory.mktemp("auth")
    (root / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root}/basic_auth.db\n"
        f"admin_username = {ADMIN[0]}\nadmin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    backend = postgres_database()
    env = tool_env(backend)
    env.update(MLFLOW_AUTH_CONFIG_PATH=str(root / "auth.ini"), MLFLOW_FLASK_SERVER_SECRET_KEY="test-secret-key")
    command = ["mlflow", "server", "--app-name", "basic-auth", "--backend-store-uri", backend]
    command += ["--workers", str(SERVER_WORKERS)]
    command += ["--artifacts-destination", str(root / "artifacts"), "-h", "127.0.0.1", "-p", "{port}"]
    with running(command, env, root / "server.log", "/health") as url:
        yield AuthServer(url, root)


def _tune(server: AuthServer, account: tuple[str, str] | None) -> subprocess.CompletedProcess:
    project = tiny_project(server.root, n_train=4, n_test=2)
    # Torch only, no companion: the accounts are the subject (the ONNX export alone takes about 10 s a job here).
    args = project.tune_args(n_trials=1, max_epochs=1, no_refit=True, study_name="auth", experiment="auth")
    args += ["--serving-paths", "none", "--lexical", "off"]
    return server.newscat(account, *args[1:], "--registered-model", MODEL)


def test_only_authorized_accounts_register_and_promote_and_the_champion_serves_through_the_server(
    server: AuthServer,
) -> None:
    anonymous = _tune(server, None)
    assert anonymous.returncode != 0
    assert "not authenticated (HTTP 401). Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in anonymous.stderr

    tuned = _tune(server, ADMIN)  # the whole job through the server: runs, artifacts (proxied), registry
    assert tuned.returncode == 0, tuned.stderr[-4000:]
    admin = MlflowClient(tracking_uri=server.url)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
        env.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
        (version,) = admin.search_model_versions(f"name='{MODEL}'")
        from mlflow.server import get_app_client

        get_app_client("basic-auth", tracking_uri=server.url).create_user(*VIEWER)
    assert (server.root / "artifacts").is_dir() and any((server.root / "artifacts").rglob("model.safetensors"))

    # Without credentials the registry cannot be changed at all.
    with pytest.raises(MlflowException, match="401"):
        MlflowClient(tracking_uri=server.url).create_model_version(MODEL, version.source, version.run_id)
    promote = ("promote", MODEL, "--from", "challenger", "--to", "champion")
    refused = server.newscat(None, *promote)
    assert refused.returncode != 0 and "HTTP 401" in refused.stderr
    # An account with READ only (the server's default permission) cannot move aliases either.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", server.url)
        env.setenv("MLFLOW_TRACKING_USERNAME", VIEWER[0])
        env.setenv("MLFLOW_TRACKING_PASSWORD", VIEWER[1])
        with pytest.raises(MlflowException, match="403") as denied:
            admin.set_registered_model_alias(MODEL, "champion", version.version)
        assert server_refusal(denied.value).startswith(f"{server.url} refused the request: viewer lacks the permission")

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
        env.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
        assert "champion" not in admin.get_registered_model(MODEL).aliases  # nothing moved by the refusals
        accepted = server.newscat(ADMIN, *promote)
        assert accepted.returncode == 0, accepted.stderr[-3000:]
        champion = admin.get_model_version_by_alias(MODEL, "champion")
        assert champion.version == version.version
        assert champion.tags["moved_to.champion"].endswith(f" by {ADMIN[0]}")

    # Serving resolves models:/NAME@champion through the server and downloads the weights it proxies.
    with serve_model(f"models:/{MODEL}@champion", server.env(ADMIN), server.root / "serve.log") as url:
        answer = requests.post(f"{url}/invocations", json={"inputs": ["Lakers win the final"]}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["label"] in CLASSES
    assert not (server.root / "mlruns").exists()  # clients wrote nothing locally: all went over HTTP
