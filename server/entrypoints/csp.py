"""Content-Security-Policy for the HTML pages the gateway serves: each inline script allowed by its SHA-256 hash
(never 'unsafe-inline' for scripts), no framing, no plugins, no form posts elsewhere, no base-URI tricks."""

from __future__ import annotations

import base64
import hashlib
import re

_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)


def csp_for_html(html: str, script_sources: tuple[str, ...] = (), style_sources: tuple[str, ...] = (),
                 img_sources: tuple[str, ...] = ()) -> str:
    hashes = [f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
              for s in _SCRIPT.findall(html)]
    return "; ".join([
        "default-src 'none'",
        "script-src " + " ".join([*hashes, *script_sources] or ["'none'"]),
        # inline style attributes carry no code; the pages use them for layout
        "style-src " + " ".join(["'self'", "'unsafe-inline'", *style_sources]),
        "img-src " + " ".join(["'self'", "data:", *img_sources]),
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])
