"""docs/benchmarks.md keeps a row per replaced run, so numbers measured on other machines stay on record."""
from __future__ import annotations

from bench.run import write_section

SECTION = """## Quick mode

| machine |  |
|---|---|
| CPU | {cpu} |
| GPU | none |
| torch / Python | 2.x / 3.11 |
| date | {date} |

## 1. End to end

| job | model | worker processes | done | chunks | wall s (submit -> last row) | x real time | x real time per process | recordings/s |
|---|---|---|---|---|---|---|---|---|
| classify:accent-native | accent-native@9.0.0 | 1 | 16/16 | 1 | 2.11 | {x} | {x} | 7.57 |
| classify:accent-native, 2 processes | accent-native@9.0.0 | 2 | 16/16 | 4 | 1.69 | 72.5 | 36.3 | 9.44 |
"""


def test_a_rerun_moves_the_replaced_sections_headline_into_the_history(tmp_path):
    path = tmp_path / "benchmarks.md"
    write_section(path, "quick", SECTION.format(cpu="Old CPU", date="2026-01-01T00:00:00", x="58.2"))
    write_section(path, "whisper", "## Whisper\n")
    assert "<!-- bench:history -->" not in path.read_text()  # nothing replaced yet
    write_section(path, "quick", SECTION.format(cpu="New CPU", date="2026-02-01T00:00:00", x="44.4"))
    write_section(path, "quick", SECTION.format(cpu="New CPU", date="2026-02-02T00:00:00", x="45.0"))
    text = path.read_text()
    history = text[text.index("<!-- bench:history -->"):]
    rows = [line for line in history.splitlines() if line.startswith("| 20")]
    assert rows == ["| 2026-01-01T00:00:00 | quick | Old CPU | none | 2.x / 3.11 | accent-native@9.0.0 | 58.2 |",
                    "| 2026-02-01T00:00:00 | quick | New CPU | none | 2.x / 3.11 | accent-native@9.0.0 | 44.4 |"]
    assert "| 45.0 |" in text[:text.index("<!-- bench:history -->")]  # the current run stays in its section
    assert text.count("## Whisper") == 1
