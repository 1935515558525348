"""docs/cli.md's command reference is generated from the parsers and must not go stale."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gen():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_cli_docs
    finally:
        sys.path.pop(0)
    return gen_cli_docs


def test_cli_reference_is_up_to_date():
    gen = _gen()
    if gen.doc_python(gen.DOC.read_text()) != gen.PYVER:
        pytest.skip(f"docs/cli.md was generated with another Python's argparse layout (this is {gen.PYVER})")
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_cli_docs.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_check_detects_a_stale_reference(tmp_path, monkeypatch):
    gen_cli_docs = _gen()
    doc = tmp_path / "cli.md"
    doc.write_text((ROOT / "docs" / "cli.md").read_text().replace("--no-skip", "--no-skipping"))
    monkeypatch.setattr(gen_cli_docs, "DOC", doc)
    assert gen_cli_docs.main(["--check"]) == 1
    assert gen_cli_docs.main([]) == 0 and gen_cli_docs.main(["--check"]) == 0
