"""Copy the benchmark results into the documentation, between its result markers.

    python benchmarks/update_docs.py

- docs/results.md: each block `<!-- results:NAME -->` … `<!-- /results:NAME -->` is replaced by
  benchmarks/results/NAME.md. The images it shows (`benchmarks/results/*.png`) are copied into
  docs/img/ and linked from there, since the site is built from docs/ alone.
- README.md: each block `<!-- summary:NAME -->` … `<!-- /summary:NAME -->` is replaced by a
  summary of benchmarks/results/NAME.md: its first paragraph (what was measured, how and where),
  then its last table with the paragraph that introduces it. Any `<!-- results:NAME -->` block
  there is replaced whole, as in docs/results.md (image links kept: the README lies at the root).

So every number in those pages comes from a file a benchmark wrote.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
IMAGES = DOCS / "img"
PAGES = [DOCS / "results.md", ROOT / "README.md"]


def _result(name: str) -> str:
    path = RESULTS / f"{name}.md"
    if not path.exists():
        raise SystemExit(f"update_docs: no {path.relative_to(ROOT)} for the block '{name}' (run its benchmark first)")
    return path.read_text()


def _for_docs(body: str) -> str:
    """The images a result shows, copied into docs/img/ and linked relative to docs/results.md."""

    def copy(match: re.Match[str]) -> str:
        source = RESULTS / match.group(2)
        IMAGES.mkdir(exist_ok=True)
        shutil.copyfile(source, IMAGES / source.name)
        return f"{match.group(1)}(img/{source.name})"

    return re.sub(r"(!\[[^\]]*\])\(benchmarks/results/([^)\s]+)\)", copy, body)


def _summary(body: str) -> str:
    """The first paragraph, then the last table with the paragraph just before it."""
    paragraphs = [p for p in body.strip().split("\n\n") if p.strip()]
    tables = [i for i, p in enumerate(paragraphs) if p.lstrip().startswith("|")]
    if not tables:
        raise SystemExit("update_docs: a summary needs a table in its results file")
    last = tables[-1]
    picked = [0] + ([last - 1] if last - 1 > 0 and last - 1 not in tables else []) + [last]
    return "\n\n".join(paragraphs[i] for i in picked) + "\n"


def _replace(text: str, kind: str, name: str, body: str) -> str:
    return re.sub(
        rf"(<!-- {kind}:{re.escape(name)} -->\n).*?(<!-- /{kind}:{re.escape(name)} -->)",
        lambda m: m.group(1) + body + m.group(2),
        text,
        flags=re.S,
    )


def update(page: Path) -> None:
    text = page.read_text()
    in_docs = page.parent == DOCS
    for name in re.findall(r"<!-- results:([\w-]+) -->", text):
        body = _result(name)
        text = _replace(text, "results", name, _for_docs(body) if in_docs else body)
    for name in re.findall(r"<!-- summary:([\w-]+) -->", text):
        text = _replace(text, "summary", name, _summary(_result(name)))
    page.write_text(text)


def main() -> None:
    for page in PAGES:
        if page.exists():
            update(page)


if __name__ == "__main__":
    main()
