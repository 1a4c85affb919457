"""The page template that lets `dvc plots show` and `dvc plots diff` draw without a network.

DVC's default page loads Vega, Vega-Lite and vega-embed from a CDN, so offline
every Vega plot is missing from it. `.dvc/config` points DVC at the template
this module writes (`plots.html_template`, a path relative to `.dvc/`): DVC's
own page with the three libraries inlined, bundled by the pinned
vl-convert-python package (`vl_convert.javascript_bundle`). It has DVC's
`{plot_divs}` and `{refresh_tag}` placeholders and no `{scripts}`, where DVC
would put its CDN tags.

`make setup` (run by `make repro` and `make test`) writes it; by hand:
`python -m stages.plots_page`. The file is generated, so git ignores it.
No stage depends on this module.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stages.core.files import atomic_file

# Where `.dvc/config`'s plots.html_template points (DVC reads a relative path from `.dvc/`).
TEMPLATE = Path(".dvc/offline_plots.html")

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- {versions}, bundled by vl-convert-python {vl_convert} (python -m stages.plots_page) -->
    <script>
@BUNDLE@
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def vegalite_version(available: list[str]) -> str:
    """The newest Vega-Lite 5 among `available` ("5.8", "5.21", "6.1", ...): DVC's templates are Vega-Lite 5 specs."""
    fives = [v for v in available if v.split(".")[0] == "5"]
    if not fives:
        raise RuntimeError(f"vl-convert-python bundles no Vega-Lite 5 (it has {', '.join(available)}); pin a version that does")
    return max(fives, key=lambda v: tuple(int(part) for part in v.split(".")))


def page(bundle: str, versions: str, vl_convert: str) -> str:
    """DVC's page with `bundle` inlined in place of its CDN script tags."""
    for marker in ("{plot_divs}", "{scripts}", "{refresh_tag}", "</script"):
        if marker in bundle:  # DVC fills placeholders by plain replacement, anywhere in the page
            raise RuntimeError(f"the JavaScript bundle contains {marker!r}; it cannot be inlined in DVC's page")
    head = PAGE.replace("{versions}", versions).replace("{vl_convert}", vl_convert)
    return head.replace("@BUNDLE@", bundle)


def build() -> str:
    """The template's text, from the installed vl-convert-python."""
    from importlib.metadata import version

    import vl_convert

    vl = vegalite_version(vl_convert.get_vegalite_versions())
    versions = f"Vega {vl_convert.get_vega_version()}, Vega-Lite {vl}, vega-embed {vl_convert.get_vega_embed_version()}"
    return page(vl_convert.javascript_bundle(vl_version=vl), versions, version("vl-convert-python"))


def write(path: Path = TEMPLATE) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(build(), encoding="utf-8")
    return path


if __name__ == "__main__":
    out = write(Path(sys.argv[1]) if len(sys.argv) > 1 else TEMPLATE)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB): DVC's plots page with Vega inlined, for offline viewing")
