"""Regenerate the "Every command" section of docs/cli.md from the ``leuk`` parsers.

Usage: ``.venv/bin/python tools/gen_cli_docs.py`` (rewrites docs/cli.md in place);
``--check`` exits 1 when the file is out of date (tests/test_cli_docs.py runs the check).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
HEADING = "## Every command (`leuk COMMAND --help`)"
PYVER = f"{sys.version_info.major}.{sys.version_info.minor}"
INTRO = (
    f"\n\nGenerated from the parsers by `tools/gen_cli_docs.py` (argparse of Python {PYVER}); "
    "`leuk --version` prints the version.\n"
)


def doc_python(doc: str) -> str | None:
    """The Python version the reference was generated with (argparse layout differs between versions)."""
    import re

    m = re.search(r"argparse of Python (\d+\.\d+)", doc)
    return m.group(1) if m else None


def render() -> str:
    os.environ["COLUMNS"] = "80"  # argparse wraps help to the terminal width
    from leukcore.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = [HEADING, INTRO]
    for name, p in sub.choices.items():
        if name == "info":  # described in full above the generated section
            continue
        text = p.format_help().replace(str(Path.home()), "~").rstrip()
        parts.append(f"\n### `leuk {name}`\n\n```\n{text}\n```\n")
    return "".join(parts)


def updated(doc: str) -> str:
    head = doc.split(HEADING)[0]
    return head + render()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check; exit 1 when docs/cli.md is stale")
    args = ap.parse_args(argv)
    doc = DOC.read_text()
    new = updated(doc)
    if args.check:
        if new != doc:
            print(f"{DOC}: the command reference is out of date; run tools/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
