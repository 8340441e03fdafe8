"""docs/findings.md and docs/findings.svg are what `make findings` makes of the committed runs:
regenerated here, they must come out byte for byte the same (issue #39: no finding typed by
hand)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

from scripts.findings import FIGURE, PAGE
from scripts.findings import main as findings_main


def test_the_findings_page_is_generated_from_the_runs(tmp_path: Path):
    page, figure = tmp_path / "findings.md", tmp_path / "findings.svg"
    assert findings_main(["--page", str(page), "--figure", str(figure)]) == 0
    assert page.read_text() == PAGE.read_text(), "run `make findings` and commit the page"
    drawn_with = re.search(r"Matplotlib v([\w.]+)", FIGURE.read_text())
    if drawn_with is None or drawn_with.group(1) != matplotlib.__version__:
        pytest.skip("the committed figure was drawn by another matplotlib: its bytes may differ")
    assert figure.read_bytes() == FIGURE.read_bytes(), "run `make findings` and commit the figure"
