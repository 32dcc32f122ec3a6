"""Write .dvc/plots/offline.html: DVC's plots page with vega, vega-lite and vega-embed inlined.

DVC's default page loads them from a CDN, so `dvc plots show` is blank offline. This template
(`plots.html_template` in .dvc/config) carries the libraries that the pinned vl-convert-python
bundles. Rerun after changing that pin: `python scripts/plots_template.py`.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import vl_convert

TEMPLATE = Path(__file__).resolve().parents[1] / ".dvc" / "plots" / "offline.html"

# DVC fills {refresh_tag} and {plot_divs}; {scripts} (its CDN tags) is left out on purpose.
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <title>DVC Plot</title>
    <!-- vega, vega-lite and vega-embed from vl-convert-python {version}: no network needed -->
    <script type="text/javascript">{bundle}</script>
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def render() -> str:
    return PAGE.format(version=version("vl-convert-python"), bundle=vl_convert.javascript_bundle())


if __name__ == "__main__":
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    TEMPLATE.write_text(render(), encoding="utf8")
    print(f"wrote {TEMPLATE}")
