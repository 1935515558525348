"""The HTML of the sign-off report (:mod:`leukcore.report`): one self-contained page.

:func:`render` turns the facts gathered by :func:`leukcore.report.report_data` into a page with its style
inline and every picture a ``data:`` URI; a Content-Security-Policy forbids anything else, so the page makes
no request at all (it opens from an e-mail, a USB stick or an archive years later, and prints to PDF).
Elements tests and tools read carry ids / classes: ``#status``, ``#counts`` (one ``tr[data-class]`` per class),
``#blast``, ``#warnings li``, ``#differential``, ``.gallery[data-kind=blast|review] img.thumb[data-cell]``,
``#models tr[data-role]``.
"""

from __future__ import annotations

from html import escape
from typing import Any, Mapping, Optional

__all__ = ["render", "CSP"]

#: nothing but inline style and data: images
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_STYLE = """
*{box-sizing:border-box}
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;color:#1d2327;margin:0;
 background:#f4f5f7}
main{max-width:1060px;margin:0 auto;padding:24px 28px 40px;background:#fff}
h1{font-size:22px;margin:0 0 2px}h2{font-size:16px;margin:26px 0 8px;border-bottom:1px solid #dde1e6;
 padding-bottom:4px}
.sub{color:#5b6670;margin:0 0 14px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:0}
dl.facts dt{color:#5b6670}dl.facts dd{margin:0}
#status{padding:10px 14px;border-radius:6px;margin:14px 0;font-weight:600}
#status.signed{background:#e3f4e6;border:1px solid #6bbf7a}
#status.unsigned{background:#fff6dd;border:1px solid #e5c15a}
#status.invalid{background:#fde5e5;border:1px solid #d9534f}
#warnings li.warning{color:#8a1c1c}#warnings li.note{color:#5b6670}
table{border-collapse:collapse;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #e6e9ed;text-align:right}
th:first-child,td:first-child{text-align:left}
#models th,#models td{text-align:left}
thead th{background:#f0f2f5;font-weight:600}
tr.total td{font-weight:600;border-top:2px solid #c9ced4}
.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px;vertical-align:-1px;
 border:1px solid rgba(0,0,0,.25)}
.big{font-size:20px;font-weight:700}
.changed{color:#b35c00;font-weight:600}
.gallery{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0;width:104px;break-inside:avoid;page-break-inside:avoid}
figure img{width:104px;height:104px;display:block;border-radius:3px;border:2px solid #ccc;image-rendering:auto}
figcaption{font-size:10.5px;line-height:1.25;color:#3c454d;overflow-wrap:anywhere}
.more{color:#5b6670;font-style:italic;margin:6px 0}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
footer{margin-top:28px;color:#6b757d;font-size:12px}
@page{size:A4;margin:14mm}
@media print{body{background:#fff}main{padding:0;max-width:none}h2{break-after:avoid}}
"""


def _e(v: Any) -> str:
    return escape("" if v is None else str(v), quote=True)


def _pct(v: Optional[float]) -> str:
    return "–" if v is None else f"{v:.1f} %"


def _num(v: Any) -> str:
    return "–" if v is None else str(v)


def _rgb(c) -> str:
    return "rgb(%d,%d,%d)" % tuple(int(x) for x in c)


def _review_text(rev: Mapping[str, Any]) -> str:
    if not rev["corrected"]:
        return "no corrections"
    return (
        f"{rev['corrected']} cell(s) corrected by {', '.join(rev['reviewers']) or 'unknown'}; "
        f"last change {rev.get('last_change') or 'unknown'}"
    )


def _facts(d: Mapping[str, Any]) -> str:
    rows = [
        ("Slide", f"<b>{_e(d['slide']['name'])}</b>"),
        ("Slide path", f"<code>{_e(d['slide']['path'])}</code>"),
        ("Slide size", _e(d["slide"]["size"])),
        ("Pixel size", _e(d["mpp"]["text"])),
        ("Region", _e(d["region"] or "whole slide")),
        ("Results", f"<code>{_e(d['results_dir'])}</code>"),
        ("Analysed with", _e(d["analysed_with"])),
        ("Review", _e(_review_text(d["review"]))),
        (
            "Report made",
            _e(d["generated"]) + (f" by {_e(d['review']['reviewer'])}" if d["review"].get("reviewer") else ""),
        ),
    ]
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _status(d: Mapping[str, Any]) -> str:
    so = d["signoff"]
    rev = d["review"]
    if so and so.get("valid"):
        cls, text = (
            "signed",
            (f"Signed off by {_e(so['reviewer'])} at {_e(so['time'])} ({rev['corrected']} cell(s) corrected)"),
        )
    elif so:
        cls, text = (
            "invalid",
            (f"Sign-off by {_e(so['reviewer'])} at {_e(so['time'])} no longer matches: {_e(so.get('reason'))}"),
        )
    else:
        who = ", ".join(rev["reviewers"]) or "nobody"
        cls, text = (
            "unsigned",
            (
                f"Not signed off. Reviewed by: {_e(who)} ({rev['corrected']} cell(s) corrected)"
                if rev["corrected"]
                else "Not reviewed, not signed off: the numbers are the model's"
            ),
        )
    return f'<div id="status" class="{cls}" data-state="{cls}">{text}</div>'


def _warnings(d: Mapping[str, Any]) -> str:
    items = [f'<li class="warning">{_e(w)}</li>' for w in d["warnings"]]
    items += [f'<li class="note">{_e(w)}</li>' for w in d["notes"]]
    if not items:
        items = ['<li class="note">none</li>']
    return f'<h2>Warnings</h2><ul id="warnings" data-warnings="{len(d["warnings"])}">' + "".join(items) + "</ul>"


def _counts(d: Mapping[str, Any]) -> str:
    m, r = d["model"], d["reviewed"]
    head = "<thead><tr><th>class</th><th>model</th><th>model %</th><th>reviewed</th><th>reviewed %</th></tr></thead>"
    rows = []
    for row in d["class_rows"]:
        c = row["name"]
        ch = ' class="changed"' if row["changed"] else ""
        rows.append(
            f'<tr data-class="{_e(c)}"><td><span class="swatch" style="background:{_rgb(row["color"])}">'
            f"</span>{_e(row['label'])}</td><td>{_num(row['model'])}</td><td>{_pct(row['model_pct'])}</td>"
            f"<td{ch}>{_num(row['reviewed'])}</td><td{ch}>{_pct(row['reviewed_pct'])}</td></tr>"
        )
    rows.append(
        f'<tr class="total"><td>all white cells</td><td>{m["cells"]}</td><td>100 %</td>'
        f"<td>{r['cells']}</td><td>100 %</td></tr>"
    )
    blast = (
        f'<p id="blast">Blast percentage (blast classes over confidently classified cells; review cells '
        f'excluded): model <span class="big" data-value="{_e(m["blast_percent"])}">'
        f'{_pct(m["blast_percent"])}</span> &nbsp; reviewed <span class="big" id="blast-reviewed" '
        f'data-value="{_e(r["blast_percent"])}">{_pct(r["blast_percent"])}</span></p>'
    )
    return (
        f'<h2>Counts</h2><table id="counts">{head}<tbody>{"".join(rows)}</tbody></table>{blast}'
        f'<p class="sub">Percentages are of all {r["cells"]} white cells found; class rows count the '
        f"confidently classified cells, <i>review / unidentified</i> the rest. Blast classes: "
        f"{_e(', '.join(d['blast_classes']) or 'none in this model')}.</p>"
    )


def _differential(d: Mapping[str, Any]) -> str:
    diff = d.get("differential")
    if not diff:
        return ""
    s, w = diff["sample"], diff["whole_slide"]
    rows = []
    for row in d["class_rows"]:
        c = row["name"]
        sc = s["review"] if row["is_review"] else s["counts"].get(c, 0)
        wc = w["review"] if row["is_review"] else w["counts"].get(c, 0)
        rows.append(
            f'<tr data-class="{_e(c)}"><td>{_e(row["label"])}</td><td>{sc}</td>'
            f"<td>{_pct(s['percent'].get(c))}</td><td>{wc}</td><td>{_pct(w['percent'].get(c))}</td></tr>"
        )
    rows.append(
        f'<tr class="total"><td>cells</td><td>{s["cells"]}</td><td>100 %</td><td>{w["cells"]}</td><td>100 %</td></tr>'
    )
    rows.append(
        f'<tr><td>blast percentage</td><td colspan="2">{_pct(s["blast_percent"])}</td>'
        f'<td colspan="2">{_pct(w["blast_percent"])}</td></tr>'
    )
    who = f", by {_e(diff.get('reviewer'))}" if diff.get("reviewer") else ""
    return (
        f'<h2>{diff["n"]}-cell differential</h2><p class="sub">First {diff["counted"]} cells in '
        f"{_e(diff['order'])} order (seed {diff['seed']}), recorded {_e(diff.get('time'))}{who}; "
        f"{diff['reviewed_in_sample']} of them carry a reviewer's label.</p>"
        f'<table id="differential" data-n="{diff["n"]}"><thead><tr><th>class</th><th>{diff["counted"]} cells'
        f"</th><th>%</th><th>whole slide</th><th>%</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _gallery(kind: str, title: str, g: Mapping[str, Any]) -> str:
    figs = []
    for t in g["thumbs"]:
        cap = f"#{t['cell_id']} {_e(t['label'])}"
        if t.get("model_label") and t["model_label"] != t["label"]:
            cap += f" (model {_e(t['model_label'])})"
        cap += f" · {t['confidence']:.2f}" if t.get("confidence") is not None else ""
        figs.append(
            f'<figure><img class="thumb" data-cell="{t["cell_id"]}" alt="cell {t["cell_id"]}" '
            f'style="border-color:{_rgb(t["color"])}" src="{t["src"]}"><figcaption>{cap}</figcaption>'
            "</figure>"
        )
    more = ""
    if g["total"] > len(g["thumbs"]):
        more = f'<p class="more">{g["total"] - len(g["thumbs"])} more not shown ({g["why_not"]}).</p>'
    if not g["total"]:
        body = '<p class="more">none</p>'
    else:
        body = f'<div class="gallery" data-kind="{kind}" data-total="{g["total"]}">{"".join(figs)}</div>'
    return f"<h2>{_e(title)} ({g['total']})</h2>{body}{more}"


def _models(d: Mapping[str, Any]) -> str:
    rows = []
    for role, m in d["models"]:
        ver = "" if not m.get("weights_verified", True) else " ✓"
        rows.append(
            f'<tr data-role="{_e(role)}"><td>{_e(role)}</td><td>{_e(m.get("name"))}</td>'
            f"<td>{_e(m.get('version'))}</td><td><code>{_e(m.get('sha256'))}</code>{ver}</td>"
            f"<td>{_e(m.get('origin'))}</td></tr>"
        )
    if not rows:
        rows = ['<tr><td colspan="5">no model record in summary.json</td></tr>']
    return (
        '<h2>Models</h2><table id="models"><thead><tr><th>role</th><th>name</th><th>version</th>'
        "<th>weights sha256</th><th>origin</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def render(d: Mapping[str, Any]) -> str:
    """The report page of :func:`leukcore.report.report_data`'s dict."""
    title = f"White-cell review: {d['slide']['name']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="leukcore {_e(d["leukcore_version"])}">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body><main>",
        f'<h1>{_e(title)}</h1><p class="sub">Peripheral blood smear: white cells found and classified by '
        f"leukcore, verified by a person. Research software, not a medical device.</p>",
        _facts(d),
        _status(d),
        _warnings(d),
        _counts(d),
        _differential(d),
        _gallery("blast", "Blasts", d["galleries"]["blast"]),
        _gallery("review", "Review / unidentified", d["galleries"]["review"]),
        _models(d),
        f"<footer>leukcore {_e(d['leukcore_version'])} · run digest <code>{_e(d['run_digest'])}</code> · "
        f"corrections sha256 <code>{_e(d['corrections_sha256'])}</code> · summary sha256 "
        f"<code>{_e(d['summary_sha256'])}</code></footer>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
