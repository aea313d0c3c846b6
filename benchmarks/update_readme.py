"""Copy the benchmark results into the README, between its result markers.

    python benchmarks/update_readme.py

Each block `<!-- results:NAME -->` … `<!-- /results:NAME -->` in README.md is replaced by
benchmarks/results/NAME.md, so every number there comes from a file a benchmark wrote.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for name in re.findall(r"<!-- results:([\w-]+) -->", text):
        body = (ROOT / "benchmarks" / "results" / f"{name}.md").read_text()
        text = re.sub(
            rf"(<!-- results:{name} -->\n).*?(<!-- /results:{name} -->)",
            lambda m: m.group(1) + body + m.group(2),
            text,
            flags=re.S,
        )
    readme.write_text(text)


if __name__ == "__main__":
    main()
