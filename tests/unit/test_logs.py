"""The command line's log: others' chatter at DEBUG, newscat's lines as they are."""

from __future__ import annotations

import io
import logging

from newscat.logs import FORMAT, OthersAtDebug


def _lines(verbose: bool) -> list[str]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT.removeprefix("%(asctime)s ")))
    handler.addFilter(OthersAtDebug(verbose))
    root = logging.getLogger()
    ours = [logging.getLogger(name) for name in ("newscat", "newscat.training.trainer")]
    # Levels (or a logging.config call's disabling) that earlier tests left on these loggers would decide before
    # the filter does.
    saved = root.level, [(logger.level, logger.disabled) for logger in ours]
    root.setLevel(logging.DEBUG)  # setLevel, not .level =: it clears the loggers' cached isEnabledFor answers
    for logger in ours:
        logger.setLevel(logging.NOTSET)
        logger.disabled = False
    root.addHandler(handler)
    try:
        logging.getLogger("newscat").info("trial 0 finished")
        logging.getLogger("newscat.training.trainer").warning("a newscat warning")
        # ONNX Runtime's quantizer logs through the root logger itself:
        logging.info('Quantization parameters for tensor:"x" not specified')
        logging.warning("Please consider to run pre-processing before quantization.")
        logging.getLogger("onnxruntime.quantization").error("a failure stays visible")
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for logger, (level, disabled) in zip(ours, saved[1], strict=True):
            logger.setLevel(level)
            logger.disabled = disabled
    return stream.getvalue().splitlines()


def test_others_info_and_warnings_are_hidden_and_errors_kept() -> None:
    assert _lines(verbose=False) == [
        "newscat INFO trial 0 finished",
        "newscat WARNING a newscat warning",
        "onnxruntime.quantization ERROR a failure stays visible",
    ]


def test_verbose_shows_them_at_debug_under_their_own_name() -> None:
    lines = _lines(verbose=True)
    assert 'test_logs DEBUG Quantization parameters for tensor:"x" not specified' in lines
    assert "test_logs DEBUG Please consider to run pre-processing before quantization." in lines
    assert len(lines) == 5 and not any(line.startswith("newscat DEBUG") for line in lines)
