"""The command line's log: newscat's own progress lines; what other libraries log below ERROR is debug detail."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(origin)s %(levelname)s %(message)s"


class OthersAtDebug(logging.Filter):
    """A handler filter: newscat's records pass as they are; another library's INFO or WARNING record (ONNX Runtime's
    quantizer logs about 30 through the root logger on every release) is demoted to DEBUG and shown only when
    `verbose`. Each line names its origin, so none passes for newscat's."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == "newscat" or record.name.startswith("newscat.")
        record.origin = "newscat" if ours else (record.module if record.name == "root" else record.name)
        if ours or record.levelno >= logging.ERROR:
            return True
        if record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.verbose


def configure_logging(verbose: bool) -> None:
    """One stderr handler on the root logger: INFO and up (all levels with `verbose`), others' chatter at DEBUG."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    handler.addFilter(OthersAtDebug(verbose))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
