"""docs/findings.md and docs/findings.svg are what `make findings` makes of the committed runs:
regenerated here, they must come out byte for byte the same, and so must every number a document
quotes between value markers (issue #39: no finding typed by hand)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest
import yaml

from scripts.findings import FIGURE, MANIFEST, PAGE, README, ROOT, Values, filled
from scripts.findings import main as findings_main
from sinelr.errors import InputError
from tests.test_report_stats import run, write


def test_the_findings_page_is_generated_from_the_runs(tmp_path: Path):
    page, figure, readme = tmp_path / "findings.md", tmp_path / "findings.svg", tmp_path / "R.md"
    readme.write_text(README.read_text())
    args = ["--page", str(page), "--figure", str(figure), "--readme", str(readme)]
    documents = yaml.safe_load(MANIFEST.read_text())["documents"]
    assert documents, "the manifest names the documents that quote its values"
    for i, name in enumerate(documents):
        copy = tmp_path / f"{i}.md"
        copy.write_text((ROOT / name).read_text())
        args += ["--document", str(copy)]
    assert findings_main(args) == 0
    assert page.read_text() == PAGE.read_text(), "run `make findings` and commit the page"
    assert readme.read_text() == README.read_text(), "run `make findings` and commit README.md"
    for i, name in enumerate(documents):
        quoted = (ROOT / name).read_text()
        assert "<!-- value:" in quoted, f"{name} quotes no value"
        assert (tmp_path / f"{i}.md").read_text() == quoted, f"run `make findings`: {name}"
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


def marker(name: str, text: str) -> str:
    return f"<!-- value: {name} -->{text}<!-- /value -->"


@pytest.fixture
def values(tmp_path: Path) -> Values:
    """bof Lucy at k = 1: plain, `auto` and ω = 400 at seeds 0-2, and ω = 800 at seed 0 alone.
    `auto` − plain per seed: 0.20, 0.21, 0.19; ω 400 gains 0.40 at every seed."""
    runs = []
    for seed, (plain, auto) in enumerate([(0.50, 0.70), (0.52, 0.73), (0.54, 0.73)]):
        runs += [
            run("lowrank", 1, plain, seed),
            run("sine_lowrank", 1, auto, seed, 70.8, fingerprint={"omega": "auto"}),
            run("sine_lowrank", 1, plain + 0.40, seed, 400.0),
        ]
    write(tmp_path / "runs", [*runs, run("sine_lowrank", 1, 0.95, 0, 800.0)])
    manifest = yaml.safe_load("""
        runs:
          lucy: {paths: [run*], task: bof, data: lucy, rank: 1}
        values:
          auto_share: {share: sine_lowrank (auto), runs: lucy, text: "{value:.0f} %"}
          auto_gain: {gap: sine_lowrank (auto), against: lowrank (given), runs: lucy}
          auto_loss: {gap: lowrank (given), against: sine_lowrank (auto), runs: lucy}
          gains: {range: [auto_gain, auto_loss], of: size, text: "{low:.1f}–{high:.1f}"}
          plain: {mean: lowrank (given), runs: lucy}
          lone: {mean: sine_lowrank ω 800, runs: lucy, text: "{value} [{low}, {high}]"}
    """)
    return Values(manifest, tmp_path, findings=[])


def test_a_value_marker_is_rewritten_from_the_runs(values: Values):
    stale = (
        f"auto recovers {marker('auto_share', '12 %')} of the gain, "
        f"{marker('auto_gain', '+1.00 [0.00, 2.00]')} over plain ({marker('plain', '0')}); "
        f"{marker('auto_loss', '0')} the other way; both {marker('gains', '0')}."
    )
    # The gap is paired by seed: mean 0.20, t interval 0.20 ± 4.303 · 0.01 / √3, × 100.
    assert filled(stale, values) == (
        f"auto recovers {marker('auto_share', '50 %')} of the gain, "
        f"{marker('auto_gain', '+20.00 [17.52, 22.48]')} over plain ({marker('plain', '52.00')}); "
        f"{marker('auto_loss', '−20.00 [−22.48, −17.52]')} the other way; both "
        f"{marker('gains', '20.0–20.0')}."
    )
    assert filled(filled(stale, values), values) == filled(stale, values)


def test_a_marker_that_cannot_be_filled_is_an_error(values: Values):
    with pytest.raises(InputError, match="no value 'unknown'"):
        filled(marker("unknown", "1"), values)
    with pytest.raises(InputError, match="interval needs two seeds"):
        filled(marker("lone", "95"), values)
    with pytest.raises(InputError, match="split across lines"):
        filled("<!-- value:\nplain -->52.00<!-- /value -->", values)
