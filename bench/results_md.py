"""Shared by the benchmarks: write one ``## `` section of bench/RESULTS.md, leaving the others alone."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def replace_section(heading: str, section: str, path: Path = RESULTS) -> None:
    """Replace the section whose heading line is exactly ``heading`` (or append it)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(heading + "\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + ("" if end == -1 else text[end:])
    path.write_text(text)


def publish(heading: str, section: str, write: bool) -> None:
    """Print a benchmark's section and, unless the run said ``--no-write``, put it in RESULTS.md."""
    print("\n" + section)
    if write:
        replace_section(heading, section)
        print(f"wrote {heading!r} in bench/RESULTS.md")
