"""bench/RESULTS.md is written by several benchmarks: each owns one marked section."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Sequence
from datetime import date
from pathlib import Path

_TITLE = "# Benchmark results\n\nEach section is rewritten by the benchmark named in it.\n"


def write_section(path: Path, key: str, markdown: str) -> None:
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else _TITLE
    if begin not in text:
        text = f"{text.rstrip()}\n\n{block}\n"
    else:
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        text = pattern.sub(lambda _: block, text)
    path.write_text(text)


def publish(report: str, path: Path | None, key: str) -> None:
    """Print ``report``, and write it as section ``key`` of ``path`` when one is given."""
    print(report)
    if path is not None:
        write_section(path, key, report)


def table_head(first: str, columns: Sequence[str]) -> list[str]:
    """A Markdown table's header row (``first`` over the row labels) and its rule."""
    label = f"| {first} |" if first else "| |"
    return [f"{label} " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]


def heading(title: str) -> list[str]:
    """A section's first lines: its title with today's date, then the machine."""
    return [f"## {title} ({date.today()})", "", f"Machine: {machine()}", ""]


def machine() -> str:
    """What the figures were measured on, for comparing runs over time."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    memory = next(
        (int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
         if line.startswith("MemTotal:")),
        0,
    )  # fmt: skip
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory / 1024:.0f} GiB, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )
