"""docs/findings.md and docs/findings.svg are what `make findings` makes of the committed runs:
regenerated here, they must come out byte for byte the same (issue #39: no finding typed by
hand)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

from scripts.findings import FIGURE, PAGE, README
from scripts.findings import main as findings_main


def test_the_findings_page_is_generated_from_the_runs(tmp_path: Path):
    page, figure, readme = tmp_path / "findings.md", tmp_path / "findings.svg", tmp_path / "R.md"
    readme.write_text(README.read_text())
    args = ["--page", str(page), "--figure", str(figure), "--readme", str(readme)]
    assert findings_main(args) == 0
    assert page.read_text() == PAGE.read_text(), "run `make findings` and commit the page"
    assert readme.read_text() == README.read_text(), "run `make findings` and commit README.md"
    drawn_with = re.search(r"Matplotlib v([\w.]+)", FIGURE.read_text())
    if drawn_with is None or drawn_with.group(1) != matplotlib.__version__:
        pytest.skip("the committed figure was drawn by another matplotlib: its bytes may differ")
    assert figure.read_bytes() == FIGURE.read_bytes(), "run `make findings` and commit the figure"


def test_the_readme_table_replaces_only_its_block():
    from scripts.findings import END, START, with_table

    readme = f"# sinelr\n\nbefore\n{START}\nold table\n{END}\nafter\n"
    assert (
        with_table(readme, f"{START}\nnew\n{END}")
        == f"# sinelr\n\nbefore\n{START}\nnew\n{END}\nafter\n"
    )
    with pytest.raises(ValueError, match=r"README\.md has no findings block"):
        with_table("# sinelr\n", "table")
