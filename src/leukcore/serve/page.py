"""The upload page of the web demo (self-contained HTML: style, script, a content security policy)."""

from __future__ import annotations

import html

from .images import Limits

__all__ = ["render_page", "csp"]


# --------------------------------------------------------------------------- page

_STYLE = (
    "body{font-family:sans-serif;max-width:44em;margin:2em auto;padding:0 1em}"
    "pre{background:#f4f4f4;padding:1em;white-space:pre-wrap}#label{font-size:1.4em}"
)
_SCRIPT = """
const form = document.getElementById('f'), out = document.getElementById('out');
const label = document.getElementById('label');
form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const file = document.getElementById('file').files[0];
  if (!file) { out.textContent = 'choose an image first'; return; }
  const fd = new FormData(); fd.append('file', file);
  const model = document.getElementById('model').value;
  out.dataset.state = 'busy'; out.textContent = 'working...'; label.textContent = '';
  try {
    const r = await fetch('predict?model=' + encodeURIComponent(model), {method: 'POST', body: fd});
    const j = await r.json();
    label.textContent = r.ok ? ('label: ' + j.label) : ('error ' + r.status + ': ' + j.error);
    out.textContent = JSON.stringify(j, null, 2);
    out.dataset.status = String(r.status); out.dataset.state = r.ok ? 'done' : 'error';
  } catch (err) {
    out.textContent = 'request failed: ' + err; out.dataset.state = 'error';
  }
});
"""
_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width,initial-scale=1">'
    '<link rel="icon" href="data:,"><title>leuk demo</title><style>' + _STYLE + "</style></head><body>"
    "<h1>leuk: white-cell classifier demo</h1>"
    "<p>Upload a blood-smear field or a single-cell crop (PNG, JPEG, BMP, TIFF, WebP; "
    "at most @MAXMB@ MB and @MAXMPX@ megapixels). Research use only; not a diagnostic device.</p>"
    '<form id="f"><input type="file" id="file" name="file" accept="image/*"> '
    '<select id="model" name="model">@OPTIONS@</select> '
    '<button id="go" type="submit">Predict</button></form>'
    '<p id="label"></p><pre id="out" data-state="idle"></pre>'
    "<script>" + _SCRIPT + "</script></body></html>"
)


def csp() -> str:
    """The page's Content-Security-Policy: only its own inline style and script (by hash), same-origin posts."""
    import base64
    import hashlib

    def h(s):
        return "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"

    return (
        f"default-src 'none'; script-src {h(_SCRIPT)}; style-src {h(_STYLE)}; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


def render_page(models: list[str], default_model: str, limits: Limits = Limits()) -> str:
    """The self-contained upload page (no external asset, works offline)."""
    options = "".join(
        f'<option value="{html.escape(m)}"{" selected" if m == default_model else ""}>{html.escape(m)}</option>'
        for m in models
    )
    return (
        _PAGE.replace("@OPTIONS@", options)
        .replace("@MAXMB@", f"{limits.max_bytes / 1e6:g}")
        .replace("@MAXMPX@", f"{limits.max_pixels / 1e6:g}")
    )
