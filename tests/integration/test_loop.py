"""The production loop end to end, with real parts only: a team's `mlflow server` on PostgreSQL, a tiny champion tuned
and promoted through it, `mlflow models serve` with tracing on (texts kept), news items sent over HTTP, true labels
fed back for part of them, `newscat monitor` flagging a shift induced on purpose, `newscat retrain --promote auto`
whose challenger wins the gate on the held-out recent traffic (and does not regress on the test split), and the new
champion served.

The induced shift is one a news desk meets: esports coverage, filed under Sci/Tech, arrives in the words of sports
reports ("beat rivals in the championship final"). The champion learned those words as Sports and answers Sports;
the labelled answers teach the challenger otherwise."""

from __future__ import annotations

import csv
import random
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import mlflow
import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient

from newscat.monitoring.retrain import LIVE_ROWS_TAG, LIVE_WINDOW_TAG
from newscat.registry.promotion import PROMOTIONS_EXPERIMENT
from newscat.serving.tracing import REGISTERED_VERSION_TAG
from tests.helpers import CLASSES, TinyProject, make_news, serve_model, tiny_project, tool_env
from tests.outage_servers import MlflowServer

pytestmark = pytest.mark.integration
MODEL = "newscat-loop"
# One learning rate and three epochs: the champion and the challenger (which starts from the champion's params)
# learn the same way, so what differs between them is the data.
SPACE = "learning_rate: 5.0e-4\nbatch_size: 8\nepochs: 3\nwarmup_ratio: 0.0\nweight_decay: 0.0\n"
ESPORTS = [
    "{e} beat rivals in the {g} championship final",
    "{e} win the {g} cup as millions watch online",
    "Coach of {e} praises defence after {g} league victory",
]
ESPORTS_FILL = {
    "e": ["Team Liquid", "Fnatic", "Cloud9", "G2 Esports", "T1"],
    "g": ["Dota 2", "League of Legends", "Counter-Strike", "Valorant", "Fortnite"],
}
N_ESPORTS, N_REGULAR = 30, 10  # the live traffic: three in four items are esports
N_UNLABELLED = 6  # answers nobody labels


@dataclass(frozen=True)
class Loop:
    server: MlflowServer
    project: TinyProject

    def env(self, **extra: str) -> dict[str, str]:
        return {**tool_env(self.server.url), **extra}

    def newscat(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["newscat", *args], cwd=self.project.root, env=self.env(), capture_output=True, text=True, timeout=900
        )

    def serve(self, log: str) -> Iterator[str]:
        tracing = {
            "NEWSCAT_TRACING": "on",
            "NEWSCAT_TRACE_TEXTS": "on",  # retrain learns from the texts
            "NEWSCAT_TRACE_MODEL_URI": f"models:/{MODEL}@champion",
        }
        return serve_model(f"models:/{MODEL}@champion", self.env(**tracing), self.project.root / log)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, postgres_database: Callable[[], str]) -> Iterator[Loop]:
    root = tmp_path_factory.mktemp("loop")
    server = MlflowServer(root, postgres_database()).start()
    try:
        project = tiny_project(root, n_train=6, n_test=4, space=SPACE)
        loop = Loop(server, project)
        tuned = loop.newscat(
            *project.tune_args(n_trials=1, max_epochs=3, registered_model=MODEL, promote="auto", experiment="loop")[1:],
            *("--serving-paths", "none"),  # the loop is the subject: torch serving, no ONNX export (10-odd s a job)
        )
        assert tuned.returncode == 0, (tuned.stdout + tuned.stderr)[-5000:]
        yield loop
    finally:
        server.stop()


def esports_news(n: int, seed: int) -> list[tuple[str, str]]:
    """(text, true label) of esports reports in sports words: the desk files them under Sci/Tech."""
    rng = random.Random(seed)
    news: dict[str, str] = {}
    while len(news) < n:  # distinct texts: a repeated one would be both trained on and held out
        title = rng.choice(ESPORTS).format(**{k: rng.choice(v) for k, v in ESPORTS_FILL.items()})
        news[f"{title}. {title}, the esports organisers said on {rng.choice(['Monday', 'Friday'])}."] = "Sci/Tech"
    return list(news.items())


def live_traffic() -> list[tuple[str, str]]:
    """The shifted traffic, in the order it arrives: esports and regular news interleaved, so the newest answers
    (held out by retrain) hold both."""
    regular = [(f"{title}. {text}", CLASSES[label - 1]) for label, title, text in make_news(3, seed=21)][:N_REGULAR]
    items = list(dict(esports_news(N_ESPORTS, seed=22) + regular).items())
    random.Random(23).shuffle(items)
    return items


def _answers(url: str, texts: list[str]) -> list[dict]:
    response = requests.post(f"{url}/invocations", json={"inputs": texts}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def _wait_traced(url: str) -> None:
    """Until the server's tracer has found the tracking server (its first answers are untraced until then)."""
    deadline = time.monotonic() + 120
    while _answers(url, ["Markets wait for the central bank"])[0]["prediction_id"] is None:
        assert time.monotonic() < deadline, "no traced answer within 120 s"
        time.sleep(0.5)


def _stored(trace_ids: set[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    pending = set(trace_ids)
    while pending and time.monotonic() < deadline:
        pending = {t for t in pending if mlflow.get_trace(t, silent=True) is None}
        time.sleep(0.5)
    assert not pending, f"{len(pending)} traces not in the store within {timeout:.0f} s"


def test_serve_trace_feedback_monitor_retrain_promote_and_serve_the_new_champion(loop: Loop) -> None:
    mlflow.set_tracking_uri(loop.server.url)
    client = MlflowClient()
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
    traffic = live_traffic()

    # 1. The champion answers the shifted traffic, one request per item, every request traced.
    with loop.serve("serve-v1.log") as url:
        _wait_traced(url)
        answers = []
        for text, _ in traffic:
            answers += _answers(url, [text])
            time.sleep(0.01)  # distinct trace timestamps: "newest" is well defined
        ids = [a["prediction_id"] for a in answers]
        assert all(ids), answers
        _stored({i.rsplit(":", 1)[0] for i in ids})  # written while the server runs
    esports = [a["label"] for a, (text, _) in zip(answers, traffic, strict=True) if "esports" in text]
    assert esports.count("Sci/Tech") <= len(esports) * 0.3, esports  # the shift: the champion gets them wrong

    # 2. The desk labels all but the last few answers.
    labels = loop.project.root / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label"])
        writer.writerows((i, truth) for i, (_, truth) in zip(ids[:-N_UNLABELLED], traffic, strict=False))
    fed = loop.newscat("feedback", str(labels), "--source", "news-desk")
    assert fed.returncode == 0, fed.stdout + fed.stderr[-3000:]

    # 3. The monitor flags it: the predicted labels drifted and live accuracy fell.
    config = loop.project.root / "loop.yaml"
    config.write_text(
        loop.project.config.read_text()
        + "  max_epochs: 3\nmodel:\n  max_length: 24\n  serving_paths: none\ndata:\n  max_eval_samples: 0\n"
        + f"tune:\n  storage: {loop.project.storage}\n"
        + f"registered_model: {MODEL}\nexperiment: loop\n"
        + "monitor:\n  since: 1h\n  min_texts: 20\n  min_labelled: 20\n"  # traces: the model's own experiment
        + "retrain:\n  since: 1h\n  min_live_rows: 20\n  holdout_share: 0.4\n  max_test_drop: 0.1\n"
    )
    monitored = loop.newscat("monitor", f"{MODEL}@champion", "--config", str(config))
    out = monitored.stdout
    print(out)  # shown when the test fails, and with -s
    assert monitored.returncode == 1 and "UNHEALTHY" in out, out + monitored.stderr[-3000:]
    # Against a reference of a few validation rows drift cannot be significant at alpha/k: the labels decide.
    assert "UNHEALTHY: live accuracy" in out and re.search(r"^label\s+chi-square", out, re.MULTILINE), out
    accuracy = float(re.search(r"live accuracy ([01]\.\d{4})", out).group(1))
    assert accuracy < 0.5, out

    # 4. Retrain: the older labelled answers join the training rows, the newest are held out and gate it.
    retrained = loop.newscat("retrain", f"{MODEL}@champion", "--config", str(config), "--promote", "auto")
    out = retrained.stdout
    print(out)
    assert retrained.returncode == 0, (out + retrained.stderr)[-6000:]
    labelled = len(traffic) - N_UNLABELLED
    held_out = round(labelled * 0.4)
    trained = labelled - held_out
    # Held-out texts that are (near-)duplicates of training rows are dropped, and the line says how many.
    dropped = re.search(r"\((\d+) more dropped: their texts are training rows too\)", out)
    held_out -= int(dropped.group(1)) if dropped else 0
    assert f"version 2, trained on the original rows and {trained} labelled live texts; {held_out} newer" in out, out
    assert "the challenger passed both gates; promoted to champion" in out, out
    version = client.get_model_version(MODEL, "2")
    assert version.tags[LIVE_ROWS_TAG] == f"{trained} trained on, {held_out} held out"
    assert version.tags[LIVE_WINDOW_TAG].startswith("mlflow-traces:experiment=")
    assert client.get_model_version_by_alias(MODEL, "champion").version == "2"
    study_run = client.get_run(version.tags["parent_run_id"])  # the live rows, as datasets whose source is the window
    contexts = {i.tags[0].value: i.dataset for i in study_run.inputs.dataset_inputs if i.tags}
    assert contexts["live_train"].source == contexts["live_holdout"].source == version.tags[LIVE_WINDOW_TAG]
    folder = next((loop.project.root / "work").glob(f"retrain-{MODEL}-*"))
    learned = set(pd.read_csv(folder / "train" / "train.csv")["text"])
    texts = [text for text, _ in traffic[:labelled]]
    assert set(texts[:trained]) <= learned and not set(texts[trained:]) & learned
    recent = set(pd.read_csv(folder / "recent" / "test.csv")["text"])
    assert recent <= set(texts[trained:]) and len(recent) == held_out  # the newest, less the dropped near-duplicates
    gates = client.search_runs(
        [client.get_experiment_by_name(PROMOTIONS_EXPERIMENT).experiment_id],
        filter_string="tags.`gate.challenger` = '2'",
    )
    kinds = {run.data.tags["gate.kind"]: run.data for run in gates}
    assert set(kinds) == {"improvement", "guard (max drop 0.1)"}
    recent = kinds["improvement"]  # the challenger won on the held-out recent traffic, significantly
    assert recent.metrics["challenger_accuracy"] > recent.metrics["champion_accuracy"]
    assert recent.metrics["mcnemar_p_value"] < 0.05 and recent.tags["gate.passed"] == "true"

    # 5. The new champion serves: esports news now goes to Sci/Tech, and its traces name version 2.
    fresh = [text for text, _ in esports_news(8, seed=99)]
    with loop.serve("serve-v2.log") as url:
        _wait_traced(url)
        served = _answers(url, fresh)
        trace_id = served[0]["prediction_id"].rsplit(":", 1)[0]
        _stored({trace_id})
    assert [a["label"] for a in served].count("Sci/Tech") >= 6, served
    assert client.get_trace(trace_id).info.tags[REGISTERED_VERSION_TAG] == "2"
