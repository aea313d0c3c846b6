"""mkdocs hooks: tables generated from the code, never kept by hand.

``<!-- capabilities -->`` becomes the method × option table of
:mod:`layerfit.methods.capabilities`, the same table ``solve()`` refuses from; ``<!-- gpus -->``
the GPU names of :mod:`layerfit.model.gpus`, with their memory and default reserve.
"""

from __future__ import annotations

from layerfit.methods.capabilities import capability_table
from layerfit.model.gpus import gpu_table

MARKERS = {"<!-- capabilities -->": capability_table, "<!-- gpus -->": gpu_table}


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    for marker, make in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown
