"""Reports of runs from their results.json files: tables, the dashboard, W&B.

One module per job, each read in this order:

- :mod:`~sinelr.report.load`: results.json files, and what the report reads off a run (its
  data item, asked of its Task class; its settings; the parameters it counts);
- :mod:`~sinelr.report.stats`: intervals, of a cell's mean and of a sine − plain gap;
- :mod:`~sinelr.report.model`: the one row model, a (method, rank, ω) with a cell per data item;
- :mod:`~sinelr.report.provenance`: where a cell's runs ran, and whether it pools unlike runs;
- :mod:`~sinelr.report.grouping`: runs into tables and pooled cells, and the Bjøntegaard deltas:
  the one grouping behind the comparison table, the dashboard and the W&B summary;
- :mod:`~sinelr.report.numbers`: the paper's numbers (``paper_numbers.yaml``);
- :mod:`~sinelr.report.layout`: our rows in the shape of the paper's tables;
- :mod:`~sinelr.report.plots`: the dashboard's figures;
- :mod:`~sinelr.report.render`: Markdown, terminal and HTML text;
- :mod:`~sinelr.report.dashboard`: the dashboard's files;
- :mod:`~sinelr.report.publish`: W&B, after a run and for a report.
"""

from sinelr.report.dashboard import write_dashboard
from sinelr.report.grouping import (
    Delta,
    bd_deltas,
    mixed_cells,
    per_item,
    summarise,
    table_groups,
    table_notes,
)
from sinelr.report.layout import FLAT_MARGIN, FLAT_MARK, TaskTable, layout
from sinelr.report.load import data_key, data_name, load_results, scored
from sinelr.report.model import Cell, Row, method_order
from sinelr.report.numbers import PaperRow, PaperTable, paper_bench_tables, paper_tables
from sinelr.report.plots import plot_omega, plot_params
from sinelr.report.publish import publish_to_wandb, upload_wandb
from sinelr.report.render import (
    bench_markdown,
    markdown,
    markdown_table,
    print_table,
    render_html,
    render_markdown,
)

__all__ = [
    "FLAT_MARGIN",
    "FLAT_MARK",
    "Cell",
    "Delta",
    "PaperRow",
    "PaperTable",
    "Row",
    "TaskTable",
    "bd_deltas",
    "bench_markdown",
    "data_key",
    "data_name",
    "layout",
    "load_results",
    "markdown",
    "markdown_table",
    "method_order",
    "mixed_cells",
    "paper_bench_tables",
    "paper_tables",
    "per_item",
    "plot_omega",
    "plot_params",
    "print_table",
    "publish_to_wandb",
    "render_html",
    "render_markdown",
    "scored",
    "summarise",
    "table_groups",
    "table_notes",
    "upload_wandb",
    "write_dashboard",
]
