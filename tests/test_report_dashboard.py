"""The dashboard (``scripts/report.py --out``): the paper's table shape with ours beside the
paper's numbers, failed runs listed, and a page that renders in a headless browser."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from scripts.report import main as report_main
from sinelr.report import paper_tables
from sinelr.results import Metric, ParamCounts, RunResult

ROOT = Path(__file__).resolve().parents[1]
PAPER_TEXT = ROOT.parent / "shared" / "reference" / "paper_sine_lowrank.txt"

# Table 13's grid: full rank, then plain and sine at the paper's ranks (the paper's ω).
TABLE13 = [("dense", None, None)] + [
    (method, k, omega)
    for k, omega in ((1, 200.0), (2, 100.0), (5, 50.0), (20, 20.0))
    for method, omega in (("lowrank", None), ("sine_lowrank", omega))
]
SHAPES = ("lucy", "dragon")


def write_run(directory: Path, shape: str = "lucy", **fields) -> dict:
    """A bof results.json on ``shape``, written by the project's own writer, so it follows
    docs/contract.md."""
    metric = fields.pop("value", None)
    result = RunResult(
        task="bof",
        adapter=None,
        preset=fields.pop("preset", "mini"),
        metric=Metric("test/iou", metric, True),
        params=ParamCounts(1000 * (fields["rank"] or 100), 0, 0, 132_865),
        output_dir=str(directory),
        task_config={"_target_": "tasks.bof.BofTask", "shape": shape},
        **fields,
    )
    result.write(directory)
    return result.to_json()


def synthetic_sweep(root: Path) -> dict[tuple, list[float]]:
    """Table 13 at two seeds on two shapes, and one failed job; returns the IoUs per cell."""
    values: dict[tuple, list[float]] = {}
    job = 0
    for shape in SHAPES:
        for i, (method, rank, omega) in enumerate(TABLE13):
            for seed in (0, 1):
                value = 0.5 + 0.02 * i + 0.01 * seed + (0.1 if shape == "dragon" else 0.0)
                values.setdefault((method, rank, shape), []).append(value)
                write_run(
                    root / str(job), method=method, rank=rank, omega=omega, seed=seed,
                    value=value, status="completed", shape=shape,
                )  # fmt: skip
                job += 1
    write_run(
        root / "failed", method="sine_lowrank", rank=5, omega=50.0, seed=2, status="failed",
        error="RuntimeError: CUDA out of memory (deliberate)",
    )  # fmt: skip
    return values


class Cells(HTMLParser):
    """Collects the dashboard's cells: ``(table, method, rank, item, kind) -> value`` and the
    failed-run rows' text."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple, float | None] = {}
        self.headers: list[str] = []
        self.failed_rows: list[str] = []
        self.body: dict[str, str] = {}
        self._table: str | None = None
        self._row: dict[str, str] = {}
        self._in_th = False
        self._failed_text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "table":
            self._table = a.get("data-task") or a.get("class")
        elif tag == "tr":
            self._row = a
            if a.get("class") == "failed":
                self._failed_text = []
        elif tag == "th" and self._table != "failed":
            self._in_th = True
        elif tag == "td" and "data-method" in self._row and "data-item" in a:
            kind = (a.get("class") or "").split()[0]
            key = (self._table, self._row["data-method"], self._row["data-rank"], a["data-item"])
            value = a.get("data-value")
            self.cells[(*key, kind)] = None if value is None else float(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "th":
            self._in_th = False
        elif tag == "tr" and self._failed_text is not None:
            self.failed_rows.append(" ".join(self._failed_text))
            self._failed_text = None

    def handle_data(self, data: str) -> None:
        if self._in_th:
            self.headers.append(data.strip())
        if self._failed_text is not None:
            self._failed_text.append(data.strip())


def parse(index: Path) -> Cells:
    cells = Cells()
    cells.feed(index.read_text())
    return cells


def check_table13(cells: Cells, ours: dict[tuple, list[float]]) -> None:
    """Every (method, rank, shape) run sits in the bof table, ×100, beside Table 13's number."""
    paper = {(r.method, r.rank): r.values for r in paper_tables()["bof"][0].rows}
    for (method, rank, shape), values in ours.items():
        key = ("bof", method, "full" if rank is None else str(rank), shape)
        # 1e-9: the page carries the float's repr, so only the ×100 rounding differs
        assert cells.cells[(*key, "ours")] == pytest.approx(statistics.fmean(values) * 100, 1e-9)
        assert cells.cells[(*key, "paper")] == paper[(method, rank)][shape]
    assert cells.headers[:4] == ["method", "k", "ω", "params"]
    assert cells.headers[4:7] == ["thai", "lucy", "dragon"]


def test_dashboard_has_table13_with_the_paper_beside_ours_and_the_failed_run(tmp_path, capsys):
    ours = synthetic_sweep(tmp_path / "sweep")
    out = tmp_path / "report"
    assert report_main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    assert "dashboard:" in capsys.readouterr().out
    cells = parse(out / "index.html")
    check_table13(cells, ours)
    # Table 13's numbers as the paper prints them, read here independently of the data file.
    assert cells.cells[("bof", "lowrank", "1", "lucy", "paper")] == 79.3
    assert cells.cells[("bof", "sine_lowrank", "5", "dragon", "paper")] == 97.4
    assert cells.cells[("bof", "dense", "full", "thai", "paper")] == 97.2
    assert cells.cells[("bof", "dense", "full", "thai", "ours")] is None  # no Thai statue run
    # Δ = ours − paper for a cell
    lucy_k1 = ("bof", "sine_lowrank", "1", "lucy")
    delta = cells.cells[(*lucy_k1, "delta")]
    assert delta == pytest.approx(cells.cells[(*lucy_k1, "ours")] - 90.7)
    (failed,) = cells.failed_rows
    assert "sine_lowrank" in failed and "CUDA out of memory (deliberate)" in failed
    page = (out / "index.html").read_text()
    assert "preset=mini — not a reproduction" in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch: works offline
    report = (out / "report.md").read_text()
    assert "| sine_lowrank | 1 | 200 | 1,000 |" in report and "79.30" in report
    assert "CUDA out of memory (deliberate)" in report
    (plot,) = (out / "plots").glob("*.png")
    with Image.open(plot) as image:
        assert image.width > 400 and image.height > 200


def test_presets_get_separate_tables_and_only_paper_is_called_a_reproduction(tmp_path):
    for preset in ("paper", "smoke"):
        write_run(
            tmp_path / preset, method="lowrank", rank=1, omega=None, seed=0, value=0.8,
            preset=preset, status="completed",
        )  # fmt: skip
    report_main([str(tmp_path), "--out", str(tmp_path / "out")])
    page = html.unescape((tmp_path / "out" / "index.html").read_text())
    assert page.count('data-task="bof"') == 2
    assert "preset=paper — the paper's settings" in page
    assert "preset=smoke — not a reproduction" in page
    assert "preset=paper — not a reproduction" not in page


def test_glue_gets_table1_columns_and_theory_one_column_without_paper_numbers(tmp_path):
    runs = [
        ("glue", "sine_lora", 2, 200.0, {"name": "rte"}, "test/acc", 0.79),
        ("glue", "lora", 2, None, {"name": "cola"}, "test/matthews", 0.60),
        ("theory", "sine_lowrank", None, None, {}, "theory/rank_fraction", 0.5),
    ]
    target = {"glue": "tasks.glue.GlueTask", "theory": "tasks.theory.TheoryTask"}
    for i, (task, method, rank, omega, config, metric, value) in enumerate(runs):
        RunResult(
            task=task, method=method, rank=rank, omega=omega, adapter=None, seed=0,
            preset="paper", metric=Metric(metric, value, True), status="completed",
            task_config={"_target_": target[task], **config},
        ).write(tmp_path / str(i))  # fmt: skip
    report_main([str(tmp_path), "--out", str(tmp_path / "out")])
    cells = parse(tmp_path / "out" / "index.html")
    # Table 1's column order, then its average; CoLA is in Matthews, RTE in accuracy, ×100.
    table1 = ["cola", "mrpc", "stsb", "sst2", "rte", "qnli", "mnli", "qqp", "avg"]
    assert cells.headers[4:13] == table1
    assert cells.cells[("glue", "sine_lora", "2", "rte", "ours")] == pytest.approx(79.0)
    assert cells.cells[("glue", "sine_lora", "2", "rte", "paper")] == 79.10
    assert cells.cells[("glue", "lora", "2", "cola", "paper")] == 68.38
    assert cells.cells[("glue", "lora", "2", "avg", "ours")] is None  # one task of eight ran
    assert cells.cells[("theory", "sine_lowrank", "full", "theory", "ours")] == 0.5
    assert cells.cells[("theory", "sine_lowrank", "full", "theory", "paper")] is None
    page = html.unescape((tmp_path / "out" / "index.html").read_text())
    assert "The paper prints no numbers for this task" in page


def test_a_commonsense_run_fills_one_column_per_set_on_the_page_and_in_the_terminal(
    tmp_path, capsys, monkeypatch
):
    sets = ["boolq", "piqa", "social_i_qa", "hellaswag", "winogrande", "ARC-Easy",
            "ARC-Challenge", "openbookqa"]  # fmt: skip
    per_set = {f"test/acc/{name}": 0.5 + i / 100 for i, name in enumerate(sets)}
    mean = statistics.fmean(per_set.values())
    RunResult(
        task="commonsense", method="sine_lora", rank=8, omega=600.0, adapter="lora", seed=0,
        preset="paper", metric=Metric("test/acc", mean, True), status="completed",
        task_config={"_target_": "tasks.commonsense.CommonsenseTask", "name": "commonsense"},
        metrics={"test/acc": mean, **per_set},
    ).write(tmp_path / "run")  # fmt: skip
    report_main([str(tmp_path), "--out", str(tmp_path / "out")])
    cells = parse(tmp_path / "out" / "index.html")
    for i, name in enumerate(sets):
        assert cells.cells[("commonsense", "sine_lora", "8", name, "ours")] == pytest.approx(50 + i)
    assert cells.cells[("commonsense", "sine_lora", "8", "avg", "ours")] == pytest.approx(
        100 * mean
    )
    assert cells.cells[("commonsense", "sine_lora", "8", "social_i_qa", "paper")] == 80.3
    assert ("commonsense", "sine_lora", "8", "commonsense", "ours") not in cells.cells
    # The comparison table comes from the same grouping: a line per set, the page's numbers.
    capsys.readouterr()
    assert report_main([str(tmp_path), "--markdown", "--scale", "100"]) == 0
    found = [line.split(" | ") for line in capsys.readouterr().out.splitlines()]
    table = {parts[1]: parts[5] for parts in found if parts[0] == "| commonsense"}
    assert table == {name: f"{50 + i:.2f}" for i, name in enumerate(sets)}
    monkeypatch.setenv("COLUMNS", "40")  # narrower than the table: it wraps between words
    assert report_main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "…" not in text and "sine_lora" in text and "ARC-Challenge" in text


def test_paper_numbers_are_printed_in_the_paper(tmp_path):
    """Each row of the data file that is not marked derived appears, in its column order, as a
    run of numbers on one line of the paper's text: nothing is invented or mistyped."""
    if not PAPER_TEXT.is_file():
        pytest.skip(f"the paper's text is not at {PAPER_TEXT}")
    number = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")
    lines = [
        [float(x) for x in number.findall(line)] for line in PAPER_TEXT.read_text().split("\n")
    ]
    checked = 0
    for task, tables in paper_tables().items():
        for table in tables:
            for row in table.rows:
                if row.derived:
                    continue
                want = [row.values[c] for c in table.columns if c in row.values]
                found = any(
                    line[i : i + len(want)] == want
                    for line in lines
                    for i in range(len(line) - len(want) + 1)
                )
                assert found, f"{task} {table.table} {row.method} k={row.rank}: {want} not in text"
                checked += 1
    assert checked == 50  # the printed rows of Tables 1, 2, 3, 7, 10, 11 and 13


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no headless browser: install Debian's chromium (`apt-get install -y chromium`)")


def chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start.
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    command.append(f"--user-data-dir={profile}")
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120, env={**os.environ}
    )


def test_the_page_renders_in_headless_chromium(tmp_path):
    browser = find_chromium()
    synthetic_sweep(tmp_path / "sweep")
    report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report")])
    url = (tmp_path / "report" / "index.html").as_uri()
    dom = chromium(browser, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = Cells()
    body.feed(dom.stdout)
    # The page's load handler counts decoded images (naturalWidth > 0) and laid-out tables.
    assert body.body.get("data-images-total") == "1"
    assert body.body.get("data-images-loaded") == "1", "the plot did not decode in the browser"
    assert body.body.get("data-tables-rendered") == "3"  # Table 13, its gaps, the failed runs
    assert ("bof", "lowrank", "1", "lucy", "paper") in body.cells
    shot = tmp_path / "screenshot.png"
    run = chromium(
        browser, tmp_path / "profile", "--hide-scrollbars", "--window-size=1400,1400",
        f"--screenshot={shot}", url,
    )  # fmt: skip
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    with Image.open(shot) as image:
        low, high = image.convert("L").getextrema()
        assert image.size == (1400, 1400) and high - low > 100  # not a blank page
    print(f"screenshot: {shot}")


@pytest.mark.slow  # not a run.py run, but wandb's service takes 10-30 s to start here
def test_wandb_offline_run_holds_the_summary_table(tmp_path, monkeypatch, capsys):
    """Without a key or network, ``--wandb`` leaves an offline run that ``wandb sync`` can
    upload: its files hold the summary table (paper numbers beside ours), the failed run and
    the plot, not just a run that raised nothing."""
    for var in ("WANDB_API_KEY", "WANDB_MODE"):  # set, then unset: teardown restores them
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    monkeypatch.setattr("sinelr.loggers.wandb_credentials", lambda: False)  # no key: offline
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    ours = synthetic_sweep(tmp_path / "sweep")
    out = tmp_path / "report"
    assert report_main([str(tmp_path / "sweep"), "--out", str(out), "--wandb"]) == 0
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    assert f"wandb run: {run_dir}" in capsys.readouterr().out
    (summary,) = run_dir.glob("files/media/table/summary_*.table.json")
    table = json.loads(summary.read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    got = {(r["method"], r["rank"], r["data"]): r for r in rows}
    assert set(got) == set(ours)
    lucy_k1 = got[("lowrank", 1, "lucy")]
    assert lucy_k1["paper"] == 79.3 and lucy_k1["paper_table"] == "Table 13"
    assert lucy_k1["mean"] == pytest.approx(statistics.fmean(ours[("lowrank", 1, "lucy")]) * 100)
    (failed,) = run_dir.glob("files/media/table/failed_*.table.json")
    assert "CUDA out of memory (deliberate)" in failed.read_text()
    assert list(run_dir.glob("files/media/images/**/*.png"))
    assert list(run_dir.glob("run-*.wandb"))  # what `wandb sync` uploads


@pytest.mark.slow
def test_table13_smoke_sweep_then_the_dashboard(tmp_path, shared_data):
    """The issue's Done-when: the real sweep at preset=smoke, then the report on its directory."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "SINELR_DATA": str(shared_data), "WANDB_MODE": "offline",
           "SINELR_CACHE": str(tmp_path / "cache")}  # fmt: skip
    run = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "-m", "+experiment=table13_bof", "preset=smoke",
         f"hydra.sweep.dir={sweep}", "trainer.enable_progress_bar=false"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sweep.rglob("results.json")]
    ours: dict[tuple, list[float]] = {}
    for r in results:
        key = (r["method"], r["rank"], r["task_config"]["shape"])
        ours.setdefault(key, []).append(r["metric"]["value"])
    assert {(m, k) for m, k, _ in ours} == {(m, k) for m, k, _ in TABLE13}
    assert {shape for _, _, shape in ours} == set(SHAPES)
    assert report_main([str(sweep), "--out", str(tmp_path / "report")]) == 0
    check_table13(parse(tmp_path / "report" / "index.html"), ours)


def test_auto_and_learnt_omega_runs_get_rows_and_markers_of_their_own(tmp_path, capsys):
    """Runs of ``omega=auto`` and a learnt ω, as the project's writer records them, beside an
    ω sweep: rows of their own on the page and in the comparison table, and an ω plot."""
    sweep = tmp_path / "sweep"
    write_run(sweep / "plain", method="lowrank", rank=1, omega=None, seed=0, value=0.7,
              status="completed")  # fmt: skip
    for omega, value in ((100.0, 0.78), (200.0, 0.8), (400.0, 0.75)):
        write_run(sweep / f"w{omega:g}", method="sine_lowrank", rank=1, omega=omega, seed=0,
                  value=value, status="completed", omega_per_layer={"hidden.0": omega})  # fmt: skip
    for learnt, value in ((False, 0.79), (True, 0.81)):
        write_run(
            sweep / f"auto_{learnt}", method="sine_lowrank", rank=1, omega=70.8, seed=0,
            value=value, status="completed",
            fingerprint={"omega": "auto", "lowrank": {"learn_omega": learnt}},
            omega_per_layer={"hidden.0": 66.04 if learnt else 70.8},
            omega_start_per_layer={"hidden.0": 70.8} if learnt else {},
        )  # fmt: skip
    out = tmp_path / "report"
    assert report_main([str(sweep), "--out", str(out), "--markdown", "--scale", "100"]) == 0
    table = capsys.readouterr().out
    assert "| 79.00 | auto 70.8 | +9.00 |" in table
    assert "| 81.00 | learnt from auto 70.8 → 66 | +11.00 |" in table
    report = (out / "report.md").read_text()
    assert "| sine_lowrank | 1 | auto 70.8 (paper 200) | 1,000 |" in report
    assert "| sine_lowrank | 1 | learnt from auto 70.8 → 66 (paper 200) | 1,000 |" in report
    page = (out / "index.html").read_text()
    assert page.count('data-omega-mode="auto"') == 1
    assert page.count('data-omega-mode="learnt from auto"') == 1
    with Image.open(out / "plots" / "bof_mini_omega.png") as image:
        assert image.width > 400 and image.height > 200
