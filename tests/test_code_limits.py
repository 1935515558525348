"""Size limits of the code under ``src/`` (issue 15): no function over 80 lines, none with more than 8
parameters (``self`` / ``cls`` not counted; dataclass fields are not parameters), no module over 500 lines.

What is still over a limit is listed in :data:`ALLOWED` with its size today; the test fails when anything new
goes over, when a listed item grows, and when a listed item is back under its limit (then delete its line), so
the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 8
MAX_MODULE_LINES = 500

#: files other work rewrites in this session: not measured until it lands, then their items move into ALLOWED
IN_FLIGHT: tuple[str, ...] = ()

#: "path[::qualified.name]" -> (what, size today); the list only shrinks
ALLOWED: dict[str, tuple[str, int]] = {}


def measure(src: Path = SRC) -> dict[str, tuple[str, int]]:
    """Everything under ``src`` over a limit: ``{"path[::name]": (what, size)}``."""
    over: dict[str, tuple[str, int]] = {}
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        if rel.startswith(IN_FLIGHT):
            continue
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES:
            over[rel] = ("module lines", n)
        _functions(ast.parse(text), rel, "", over)
    return over


def _functions(node, rel: str, prefix: str, over: dict) -> None:
    for ch in ast.iter_child_nodes(node):
        if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = prefix + ch.name
            lines = ch.end_lineno - ch.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                over[f"{rel}::{name}"] = ("function lines", lines)
            a = ch.args
            params = [p for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
            if len(params) > MAX_PARAMETERS:
                over[f"{rel}::{name} (parameters)"] = ("parameters", len(params))
            _functions(ch, rel, name + ".", over)
        elif isinstance(ch, ast.ClassDef):
            _functions(ch, rel, prefix + ch.name + ".", over)
        else:
            _functions(ch, rel, prefix, over)


def test_nothing_new_over_the_limits():
    over = measure()
    new = {k: v for k, v in over.items() if k not in ALLOWED}
    assert not new, f"over the limits (cut them into named steps): {new}"


def test_listed_items_only_shrink():
    over = measure()
    grown = {k: (ALLOWED[k][1], v[1]) for k, v in over.items() if k in ALLOWED and v[1] > ALLOWED[k][1]}
    assert not grown, f"grew since listed (listed, now): {grown}"
    done = sorted(k for k in ALLOWED if k not in over)
    assert not done, f"back under the limits: delete from ALLOWED: {done}"


if __name__ == "__main__":  # print an ALLOWED block for what is over today
    for k, (what, n) in sorted(measure().items()):
        print(f'    "{k}": ("{what}", {n}),')
