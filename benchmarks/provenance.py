"""What every benchmark's JSON records about its run, so that each published figure can be traced: the CPU, the date,
the commit of the code measured and the command.

    from provenance import provenance   # benchmarks/ is on sys.path when a script runs as `python benchmarks/X.py`
    report = {"benchmark": "...", **provenance(), ...}
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The CPU features that change the figures (bf16 and int8 kernels), as /proc/cpuinfo spells them.
FLAGS = {"avx512_bf16": "AVX512-BF16", "amx_tile": "AMX", "avx512_vnni": "VNNI", "avx_vnni": "AVX-VNNI"}
KEYS = ("cpu", "date", "commit", "command")


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (figures are only comparable on the same CPU)."""
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_description() -> str:
    """Model name, cores this process may use, the bf16/int8 features, memory: e.g.
    `AMD EPYC 9R14 (2 cores; AVX512-BF16, VNNI), 24 GiB`."""
    flags = next((set(line.split(":", 1)[1].split()) for line in _cpuinfo() if line.startswith("flags")), set())
    features = ", ".join(name for flag, name in FLAGS.items() if flag in flags) or "no bf16/VNNI features"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = f", {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB"
    return f"{cpu_name()} ({cores} cores; {features}){memory}"


def commit() -> str:
    """The checked-out commit, with `+dirty` when newscat/ or benchmarks/ differ from it (the figures then measure
    uncommitted code); `unknown` outside a git checkout."""
    try:
        head = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "newscat", "benchmarks")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def command(argv: list[str] | None = None) -> str:
    """The command line that ran the script, as it would be typed from the repository root."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join(["python", str(shown), *argv[1:]])


def provenance(argv: list[str] | None = None) -> dict[str, str]:
    """The four keys every results file carries (`KEYS`)."""
    return {
        "cpu": cpu_description(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit(),
        "command": command(argv),
    }


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def emit(result: dict, out: Path | None) -> None:
    """Print the results as JSON and, where `out` is given, write the same text there."""
    import json

    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n", encoding="utf-8")
