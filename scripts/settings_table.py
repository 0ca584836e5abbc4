"""Write the settings table of docs/configuration.md from the declarations in `metrics.conf`.

Usage: `.venv/bin/python scripts/settings_table.py` (after changing a setting's declaration);
`--check` only reports whether the docs are current (tests/test_conf.py checks the same).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"
BEGIN = "<!-- settings table: generated from python/metrics/conf.py by scripts/settings_table.py -->\n"
END = "<!-- end of the settings table -->\n"


def replace_table(text: str, table: str) -> str:
    """Return `text` with what lies between the two markers replaced by `table`."""
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"{DOC}: the table's markers are missing")
    return head + BEGIN + table + END + tail


def main() -> int:
    """Rewrite the table, or with `--check` return 1 when it is stale."""
    sys.path.insert(0, str(ROOT / "python"))
    from metrics.conf import settings_table

    text = DOC.read_text(encoding="utf-8")
    updated = replace_table(text, settings_table())
    if "--check" in sys.argv[1:]:
        if updated != text:
            print(f"{DOC} is stale: run scripts/settings_table.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
