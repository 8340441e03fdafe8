"""The report as text: the comparison table (Markdown or the terminal), the dashboard's
index.html and report.md, and a benchmark's JSON beside the paper's table.

Every Markdown table goes through :func:`markdown_table`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from html import escape
from typing import TYPE_CHECKING

from sinelr.report.layout import FLAT_MARGIN, FLAT_MARK, TaskTable, near_flat
from sinelr.report.load import RUN_HEADER, run_label
from sinelr.report.model import (
    MIXED_MARK,
    Cell,
    Row,
    lines,
    method_order,
    omega_text,
    omega_value_text,
    row_order,
    sine_gap,
    sine_pair,
)
from sinelr.report.numbers import paper_bench_tables
from sinelr.report.stats import LEVEL, NOT_RESOLVED, UNPAIRED, Gap
from sinelr.results import SINE_PREFIX, rank_text

if TYPE_CHECKING:
    from rich.console import Console


def markdown_table(header: list[str], body: Iterable[list[str]], align: str = "") -> list[str]:
    """A Markdown table's lines. ``align`` has a letter per column, ``r`` for right-aligned;
    a column without one is left as Markdown's default."""
    rule = "".join("---:|" if a == "r" else "---|" for a in align.ljust(len(header)))
    return ["| " + " | ".join(header) + " |", "|" + rule] + [
        "| " + " | ".join(cells) + " |" for cells in body
    ]


# --- The comparison table: a line per data item and rank, a column per method --------------


def _methods(rows: list[Row]) -> list[str]:
    present = {row.method for row in rows if row.cells}
    return [m for m in method_order() if m in present]


def _comparison(rows: list[Row], scale: float) -> tuple[list[str], list[list[str]]]:
    """(header, body) of the comparison table of ``rows`` (:func:`sinelr.report.model.lines`);
    a line's parameters and metric are those of its first method's cell, its ``sine − plain``
    the gap with its interval (:func:`sinelr.report.model.sine_gap`). The ω column is the
    sine cell's, led by its mode for ``omega=auto`` or a learnt ω (``auto 70.8``), and given
    on a line without a plain run to compare with too: an ω sweep at a rank where plain never
    ran would otherwise print lines that differ in nothing but the metric."""
    methods = _methods(rows)
    header = ["task", "data", "rank", "params", "metric", *methods, "ω", "sine − plain"]
    body = []
    for task, data, rank, cells in lines(rows):
        pair = sine_pair(cells)
        sines = [c for m, c in cells.items() if m.startswith(SINE_PREFIX)]
        sine = pair[1] if pair else next(iter(sines), None)
        first: Cell = next(iter(cells.values()))
        body.append(
            [
                task,
                data,
                rank_text(rank),
                f"{first.params:,}",
                first.metric,
                *[cells[m].text(scale) if m in cells else "" for m in methods],
                omega_text(sine) if sine and (sine.omega or sine.omega_mode) else "",
                sine_gap(*pair).text(scale) if pair else "",
            ]
        )
    return header, body


def markdown(rows: list[Row], scale: float = 1.0) -> str:
    """The comparison table in Markdown."""
    return "\n".join(markdown_table(*_comparison(rows, scale)))


def _fit_widths(columns: list[list[str]], room: int) -> list[int]:
    """Text widths of table columns sharing ``room`` characters, no column narrower than its
    longest word, so that wrapping never cuts one (rich's own fitting does: ``sine_lowr…``).
    Space beyond those minima goes to the columns in proportion to how much wider their longest
    line is; a table whose minima exceed the room gets the minima."""
    from rich.cells import cell_len

    low = [max(cell_len(w) for text in texts for w in text.split()) for texts in columns]
    high = [max(low[i], *(cell_len(text) for text in texts)) for i, texts in enumerate(columns)]
    if sum(high) <= room:
        return high
    spare, want = max(room - sum(low), 0), sum(high) - sum(low)
    return [lo + (hi - lo) * spare // want for lo, hi in zip(low, high, strict=True)]


def print_table(
    rows: list[Row], scale: float = 1.0, title: str | None = None, console: Console | None = None
) -> None:
    """The comparison table in the terminal; columns that are the same on every line move
    into the title.

    Lines wrap between words, never through one; a table whose longest words do not fit the
    terminal is printed whole, for the terminal to wrap, rather than cropped.
    """
    from rich.console import Console
    from rich.table import Column, Table

    header, body = _comparison(rows, scale)
    constant = [i for i in (0, 4) if len({line[i] for line in body}) == 1]
    keep = [i for i in range(len(header)) if i not in constant]
    shared = " · ".join(body[0][i] for i in constant)
    scaled = f" (×{scale:g})" if scale != 1 else ""
    console = console or Console()
    texts = [[header[i], *(line[i] for line in body)] for i in keep]
    frame = 3 * len(keep) + 1  # each column's padding (1 + 1) and border
    widths = _fit_widths(texts, console.width - frame)
    table = Table(
        *(Column(header[i], width=w) for i, w in zip(keep, widths, strict=True)),
        title=" · ".join(filter(None, [shared + scaled, title])),
        width=None if sum(widths) + frame <= console.width else sum(widths) + frame,
    )
    for line in body:
        table.add_row(*(line[i] for i in keep))
    console.print(table, crop=False)


# --- Benchmarks: a scripts/bench_*.py JSON beside the paper's table ------------------------


def bench_markdown(result: dict, name: str = "benchmark JSON") -> str:
    """A benchmark's ``report`` (its paper table, unit, and rows of method, rank and value) as
    Markdown beside the paper's numbers. Each side is also divided by the table's baseline
    method at the same rank: the comparison that carries across devices and units."""
    report = result.get("report")
    if not isinstance(report, dict):
        raise ValueError(f"{name} has no 'report': write it with a bench script's --json")
    tables = paper_bench_tables()
    paper = tables.get(report.get("table"))
    if paper is None:
        raise ValueError(f"{name}: table {report.get('table')!r} is none of {sorted(tables)}")
    ours = {(r["method"], r["rank"]): float(r["value"]) for r in report["rows"]}
    theirs = {(r.method, r.rank): r.values[paper.columns[0]] for r in paper.rows}

    def cells(values: dict, key: tuple) -> list[str]:
        if key not in values:
            return ["", ""]
        base = values.get((paper.baseline, key[1]))
        return [f"{values[key]:,.1f}", "" if base is None else f"{values[key] / base:.3f}"]

    device = result.get("summary", {}).get("device")
    header = ["method", "k", "ours", f"ours / {paper.baseline}"]
    header += ["paper", f"paper / {paper.baseline}"]
    keys = sorted(ours.keys() | theirs.keys(), key=lambda k: row_order((*k, None)))
    body = [[key[0], rank_text(key[1]), *cells(ours, key), *cells(theirs, key)] for key in keys]
    text = [
        f"### {paper.table}: ours beside the paper's",
        "",
        paper.source,
        "",
        f"Ours in {report['unit']}{f' ({device})' if device else ''}, the paper's in "
        f"{paper.unit}; ratios are to {paper.baseline} at the same rank.",
        "",
        *markdown_table(header, body, align="lrrrrr"),
    ]
    return "\n".join(text) + "\n"


# --- The dashboard: index.html (self-contained) and report.md ------------------------------

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } td.method, th.method { text-align: left; }
td.paper { color: #555; background: #fafafa; } td.missing { color: #bbb; }
td.better { color: #070; } td.worse { color: #b00; }
.badge { display: inline-block; padding: 4px 10px; border-radius: 4px; font-weight: bold; }
.badge.warn { background: #fff3cd; border: 1px solid #e0b000; color: #6b5200; }
.badge.ok { background: #d4edda; border: 1px solid #28a745; color: #155724; }
.source { color: #555; font-size: 0.9em; max-width: 100em; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.scroll { overflow-x: auto; }
pre { white-space: pre-wrap; margin: 0; text-align: left; max-width: 70em; }
"""

# Marks, once the page has loaded, how many images decoded and tables laid out, so a headless
# browser's DOM dump shows that the page rendered (tests/test_report_dashboard.py reads these).
RENDER_CHECK = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const tables = Array.from(document.querySelectorAll("table"));
  document.body.dataset.imagesTotal = images.length;
  document.body.dataset.imagesLoaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.tablesRendered =
    tables.filter(t => t.getBoundingClientRect().height > 0).length;
});
"""


#: The interval and marks of a cell and of a gap, said under each table of the dashboard
#: (docs/report.md states the rules).
INTERVAL = f"{LEVEL * 100:g} % Student t interval"
MIXED_NOTE = (
    f"{MIXED_MARK.strip()}: the cell pools runs of different commits, machines or precisions."
)
GAP_NOTE = (
    f"sine − plain: the mean gap [{INTERVAL}], paired by seed where both cells ran the same "
    f"seeds, else Welch's ({UNPAIRED}); ({NOT_RESOLVED}): not resolved, the interval holds 0; "
    f"no brackets: too few runs for an interval."
)


def _ours_note(scale: float) -> str:
    return f"Ours ×{scale:g}: mean ± std (seeds) [{INTERVAL} of the mean]. {MIXED_NOTE}"


def _cells_omega(row: Row) -> set[str]:
    return {omega_text(cell) for cell in row.cells.values()}


def _row_omega(row: Row) -> str:
    """A row's ω: its own, or for a row of ``omega=auto`` or a learnt ω its cells' (``auto
    70.8``); only the mode where the cells differ (the rule's ω per data item), each cell then
    naming its own (:func:`_cell_omega`)."""
    if not row.omega_mode:
        return "" if row.omega is None else f"{row.omega:g}"
    found = _cells_omega(row)
    return found.pop() if len(found) == 1 else row.omega_mode


def _cell_omega(row: Row, column: str) -> str:
    """`` · ω 70.8`` after a cell of a row whose cells' ω differ, else nothing."""
    cell = row.cells.get(column)
    if cell is None or not row.omega_mode or len(_cells_omega(row)) == 1:
        return ""
    return f" · ω {omega_value_text(cell)}"


def _omega(row: Row) -> str:
    ours = _row_omega(row)
    paper = row.paper.omega if row.paper else None
    if paper is not None and paper != row.omega and row.cells:
        return f"{ours} (paper {paper:g})"
    return ours if row.cells or paper is None else f"{paper:g}"


def _params(row: Row) -> str:
    """Our parameter count, or the paper's (in brackets) on a row we did not run."""
    if row.paper and row.paper.params and not row.cells:
        return f"({row.paper.params})"
    return "" if row.params is None else f"{row.params:,}"


def _versus(table: TaskTable, row: Row, column: str) -> tuple[str, float | None, float | None]:
    """(our text, our mean on the paper's scale, the paper's value) of one cell."""
    ours = row.ours(column, table.columns)
    paper = row.paper.values.get(column) if row.paper else None
    scaled = None if ours is None else ours * table.scale
    if column in row.cells:
        text = row.cells[column].text(table.scale) + _cell_omega(row, column)
        text += FLAT_MARK if near_flat(table, row, column) else ""
    else:
        text = "" if scaled is None else f"{scaled:.2f}"
    return text, scaled, paper


def _badge(table: TaskTable) -> str:
    if table.reproduction:
        return "preset=paper — the paper's settings"
    return f"preset={table.preset} — not a reproduction"


def _header_note(table: TaskTable) -> str:
    sources = " ".join(f"Paper: {t.source}" for t in table.paper)
    return sources or "The paper prints no numbers for this task (figures only)."


def _html_cells(table: TaskTable, row: Row, column: str) -> list[str]:
    """The ours, paper and Δ cells of one data item of a row."""
    text, ours, paper = _versus(table, row, column)
    attrs = f'data-item="{escape(column)}"'
    ours_attr = "" if ours is None else f' data-value="{ours!r}"'
    paper_attr = "" if paper is None else f' data-value="{paper!r}"'
    derived = ' title="derived from the paper\'s text"' if row.paper and row.paper.derived else ""
    cells = [
        f'<td class="ours{"" if text else " missing"}" {attrs}{ours_attr}>'
        f"{escape(text) or '—'}</td>",
        f'<td class="paper" {attrs}{paper_attr}{derived}>'
        f"{'' if paper is None else f'{paper:.2f}'}</td>",
    ]
    if ours is None or paper is None:
        return [*cells, f'<td class="delta" {attrs}></td>']
    diff = ours - paper
    cls = "better" if diff >= 0 else "worse"
    return [*cells, f'<td class="delta {cls}" {attrs} data-value="{diff!r}">{diff:+.2f}</td>']


def _html_table(table: TaskTable) -> str:
    head1 = ['<th class="method" rowspan="2">method</th>', '<th rowspan="2">k</th>']
    head1 += ['<th rowspan="2">ω</th>', '<th rowspan="2">params</th>']
    head2 = []
    for column in table.columns:
        metric = table.metrics.get(column, "")
        title = f' title="{escape(metric)}"' if metric else ""
        head1.append(f'<th colspan="3"{title}>{escape(column)}</th>')
        head2 += ["<th>ours</th>", "<th>paper</th>", "<th>Δ</th>"]
    html = [f"<tr>{''.join(head1)}</tr>", f"<tr>{''.join(head2)}</tr>"]
    for row in table.rows:
        cells = [
            f'<td class="method">{escape(row.method)}</td>',
            f"<td>{rank_text(row.rank)}</td>",
            f"<td>{escape(_omega(row))}</td>",
            f"<td>{_params(row)}</td>",
        ]
        for column in table.columns:
            cells += _html_cells(table, row, column)
        mode = f' data-omega-mode="{escape(row.omega_mode)}"' if row.omega_mode else ""
        html.append(
            f'<tr data-method="{escape(row.method)}" data-rank="{rank_text(row.rank)}" '
            f'data-omega="{"" if row.omega is None else f"{row.omega:g}"}"{mode} '
            f'data-ran="{str(bool(row.cells)).lower()}">{"".join(cells)}</tr>'
        )
    body = "\n".join(html)
    task = escape(table.task)
    return f'<div class="scroll"><table class="task" data-task="{task}">\n{body}\n</table></div>'


def _deltas_text(table: TaskTable) -> list[str]:
    text = [f"{d.data}: {d.text(table.scale)}" for d in table.deltas]
    text += [f"paper ({t.table}): BD-PSNR {t.bd_psnr:+.2f} dB" for t in table.paper if t.bd_psnr]
    if table.floors:
        floors = ", ".join(f"{item} {v * table.scale:.2f}" for item, v in table.floors.items())
        text.append(
            f"Flat colour (each test view's own mean colour, the best an output with no "
            f"structure scores): {floors}.{FLAT_MARK} marks a cell with a run less than "
            f"{FLAT_MARGIN:g} dB above it: that network has learnt little beyond a colour."
        )
    return text


GAP_HEADER = ["data", "k", "method", "ω", "plain", "sine", "sine − plain"]


def _gaps(table: TaskTable) -> list[tuple[list[str], Gap]]:
    """Each ``sine − plain`` comparison of the table, a line per data item, rank, sine method,
    ω and ω mode (:func:`~sinelr.report.model.lines`), as the comparison table has them: its
    cells (:data:`GAP_HEADER`) and its gap."""
    found = []
    for _, data, rank, cells in lines(table.rows):
        pair = sine_pair(cells)
        if pair:
            plain, sine = pair
            method = next(m for m, c in cells.items() if c is sine)
            between = sine_gap(plain, sine)
            texts = [plain.text(table.scale), sine.text(table.scale), between.text(table.scale)]
            found.append(([data, rank_text(rank), method, omega_text(sine), *texts], between))
    return found


def _html_gaps(table: TaskTable, gaps: list[tuple[list[str], Gap]]) -> str:
    """The table's ``sine − plain`` gaps (:func:`_gaps`); each line carries its numbers on the
    paper's scale (``data-gap``, ``data-low``, ``data-high``) and whether it is paired."""
    head = "".join(f"<th>{escape(h)}</th>" for h in GAP_HEADER)
    html = []
    for cells, found in gaps:
        attrs = f'data-gap="{found.mean * table.scale!r}" data-paired="{str(found.paired).lower()}"'
        if found.interval:
            low, high = (bound * table.scale for bound in found.interval)
            attrs += f' data-low="{low!r}" data-high="{high!r}"'
        tds = "".join(f"<td>{escape(c)}</td>" for c in cells)
        html.append(f"<tr {attrs}>{tds}</tr>")
    task = escape(table.task)
    return (
        f'<table class="gaps" data-gaps="{task}">\n<tr>{head}</tr>\n' + "\n".join(html) + "</table>"
    )


def _html_failed(failed: list[dict]) -> str:
    head = "".join(f"<th>{h}</th>" for h in [*RUN_HEADER, "output dir", "error"])
    rows = []
    for r in failed:
        error = str(r.get("error") or "(no error message)")
        first = error.strip().splitlines()[-1] if error.strip() else error
        cells = "".join(f"<td>{escape(c)}</td>" for c in run_label(r))
        rows.append(
            f'<tr class="failed">{cells}'
            f'<td class="method">{escape(str(r.get("output_dir", "")))}</td>'
            f'<td class="method"><details><summary>{escape(first)}</summary>'
            f"<pre>{escape(error)}</pre></details></td></tr>"
        )
    return f'<table class="failed"><tr>{head}</tr>\n' + "\n".join(rows) + "</table>"


def render_html(tables: list[TaskTable], failed: list[dict], plots: dict, note: str) -> str:
    """The dashboard as one HTML file: inline CSS, plots embedded as data URIs, no network."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>sinelr report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>sinelr: our runs beside the paper's numbers</h1>",
        f"<p>{escape(note)}</p>",
    ]
    if not tables:
        parts.append("<p>No completed runs.</p>")
    for table in tables:
        cls = "ok" if table.reproduction else "warn"
        parts += [
            f'<h2 id="{escape(table.slug)}">{escape(table.title)}</h2>',
            f'<div class="badge {cls}">{escape(_badge(table))}</div>',
            f'<p class="source">{escape(_header_note(table))} {escape(_ours_note(table.scale))} '
            f"Δ = ours − paper.</p>",
            _html_table(table),
        ]
        if gaps := _gaps(table):
            parts += [f"<p>{escape(GAP_NOTE)}</p>", _html_gaps(table, gaps)]
        parts += [f'<p class="note">{escape(line)}</p>' for line in table.notes]
        parts += [f"<p>{escape(line)}</p>" for line in _deltas_text(table)]
        for path in plots.get(table.slug, []):
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f'<img src="data:image/png;base64,{data}" alt="{escape(path.stem)}">')
    parts.append(f'<h2 id="failed">Failed runs ({len(failed)})</h2>')
    parts.append(_html_failed(failed) if failed else "<p>None.</p>")
    parts += [f"<script>{RENDER_CHECK}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


def _markdown_body(table: TaskTable) -> list[list[str]]:
    """The cells of a task table's rows in report.md: ours, the paper's and Δ per data item."""
    body = []
    for row in table.rows:
        cells = [row.method, rank_text(row.rank), _omega(row)]
        cells.append(f"{row.params:,}" if row.params is not None else "")
        for column in table.columns:
            text, ours, paper = _versus(table, row, column)
            cells += [text, "" if paper is None else f"{paper:.2f}"]
            cells.append("" if ours is None or paper is None else f"{ours - paper:+.2f}")
        body.append(cells)
    return body


def render_markdown(tables: list[TaskTable], failed: list[dict], plots: dict, note: str) -> str:
    """report.md: the same tables, plots linked as files beside it."""
    text = ["# sinelr: our runs beside the paper's numbers", "", note, ""]
    for table in tables:
        text += [f"## {table.title}", "", f"> **{_badge(table)}**", ""]
        text += [_header_note(table), ""]
        header = ["method", "k", "ω", "params"]
        for column in table.columns:
            header += [f"{column} ours", f"{column} paper", f"{column} Δ"]
        text += markdown_table(header, _markdown_body(table))
        text += ["", f"{_ours_note(table.scale)} Δ = ours − paper.", ""]
        if gaps := _gaps(table):
            text += [GAP_NOTE, "", *markdown_table(GAP_HEADER, [c for c, _ in gaps]), ""]
        text += [f"- {line}" for line in [*table.notes, *_deltas_text(table)]]
        text += [f"![{p.stem}](plots/{p.name})" for p in plots.get(table.slug, [])]
        text.append("")
    text += [f"## Failed runs ({len(failed)})", ""]
    if failed:
        body = []
        for r in failed:
            error = " ".join(str(r.get("error") or "(no error message)").split())
            body.append([*run_label(r), error.replace("|", "\\|")])
        text += markdown_table([*RUN_HEADER, "error"], body)
    else:
        text.append("None.")
    return "\n".join(text) + "\n"
