"""The docs' "Run a Hugging Face checkpoint" section (docs/runtime.md) works exactly as written:
its shell commands, then its Python, in an empty folder, with the installed `layerfit` on PATH."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from helpers import ROOT  # noqa: E402

BIN = Path(sys.executable).parent


def example_blocks(marker: str) -> dict[str, str]:
    """The fenced code blocks (by language) between ``<!-- example:MARKER -->`` and its end."""
    text = (ROOT / "docs" / "runtime.md").read_text()
    section = re.search(rf"<!-- example:{marker} -->\n(.*?)<!-- /example:{marker} -->", text, re.S)
    assert section, f"docs/runtime.md has no example {marker!r}"
    return dict(re.findall(r"```(\w+)\n(.*?)```", section.group(1), re.S))


@pytest.mark.skipif(not (BIN / "layerfit").exists(), reason="the layerfit console script is not installed")
def test_run_a_hugging_face_checkpoint_as_the_docs_say(tmp_path):
    blocks = example_blocks("hf-run")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    shell = subprocess.run(["bash", "-euo", "pipefail", "-c", blocks["bash"]], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert shell.returncode == 0, shell.stderr[-3000:]
    assert "2 ranks (gloo), schedule gpipe, 4 micro-batches of 2" in shell.stdout
    assert "predicted: from_hf_config at micro-batch 2, sequence 64" in shell.stdout
    ratios = re.findall(r"^\s+[01]\s+[\d,]+\s+[\d,]+\s+[\d,]+\s+[\d,]+\s+[\d,]+\s+(\S+)$", shell.stdout, re.M)
    assert ratios == ["1.00", "1.00"], shell.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["loaded_bytes"] for r in report["ranks"]] == [r["param_bytes"] for r in report["ranks"]]
    (tmp_path / "example.py").write_text(blocks["python"])
    python = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert python.returncode == 0, python.stderr[-3000:]
    assert float(re.search(r"tensor\(([^,)]+)", python.stdout).group(1)) < 1e-5, python.stdout
