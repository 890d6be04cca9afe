"""Paper-style leaderboard tables from result records (pure functions: data in, strings out).

Tables. One table per (benchmark, protocol kind): single-source (columns ``SRC->TGT``) and
multi-source leave-one-out (columns ``MA``, ``D``, ``MS``, ``C3`` and ``Average``). Real and
generated (synthetic) benchmarks always get separate tables; published numbers only ever join
real tables.

Rows.
* Reproduced rows ("``<method> (ours)``"): every run of one method on one column (e.g. the seeds
  of a suite) is aggregated into one cell: the mean, the sample standard deviation (ddof=1; only
  for two runs or more) and the number of runs ``n``; each run's values and provenance (run
  folder, config, command, commit, checkpoint and its sha256, log, wall time, device) stay
  attached to the cell. The ``Runs`` column gives ``n`` (``3``, or ``1-3`` when columns differ).
* Published rows (with ``published``): the packaged numbers exactly as printed, one row per
  (row name, source), with the source as a footnote ``[n]`` and the row's protocol flags (e.g.
  MSMT17 V1) as lettered markers explained under the table. Rows flagged with a different
  training ``protocol`` (e.g. all images of each source, epoch chosen on the target) form their
  own table per protocol kind, ranked among themselves only; reproduced rows (trained on the
  source train splits) never share a table with them. A published row of a method that
  also has a reproduced row is labelled "``<method> (<tag>)``" (``paper``, or e.g. ``torchreid``).
* Difference rows ("``<method>: ours - <tag>``"): for every pair of a reproduced row and a
  published row of the same method sharing a column: reproduced mean minus published, per metric.

Average. The multi-source ``Average`` of any row (published or reproduced) with all four
leave-one-out targets is the mean of the four; a printed average is kept as printed, any other is
computed here and marked ``†``. A reproduced average carries a ± over seeds when every seed has
all four targets.

Marks. Per column and per metric (mAP, R1 separately), over all published and reproduced rows
(never the difference rows), comparing values rounded half-up to one decimal: the best value (ties
all marked) and the second-best distinct value. Marks are only given in a column with at least two
values. github: ``**best**`` / ``_second_``; latex: ``\\textbf`` / ``\\underline``; html: ``<b>`` /
``<i>``; csv: ``mAP_mark`` / ``rank1_mark`` columns (``best``, ``second``); json: ``mark`` per cell.

Formats. ``github`` (markdown), ``latex`` (booktabs), ``html`` (a self-contained page: inline CSS
and JS, sortable tables, the plot embedded, links to each run's files), ``csv`` (tidy: one line per
row x column) and ``json`` (everything: each run's values and provenance per cell).

Modules (each usable alone):

* :mod:`.model` -- the data: :class:`RunValue`, :class:`Cell`, :class:`Row`, :class:`Table`, options;
* :mod:`.ranking` -- aggregation over runs, the ``Average`` column, best/second-best marks;
* :mod:`.build` -- :func:`build_tables`: records and published numbers to tables;
* :mod:`.markup` -- what the renderers share (cell text, notes, source and flag numbering);
* :mod:`.github`, :mod:`.latex`, :mod:`.csv_table`, :mod:`.json_doc` -- one renderer each;
* :mod:`.html_page` (the page, its CSS and JS read from ``dcac_plugin/resources/leaderboard/``),
  :mod:`.html_table` (the sortable tables), :mod:`.html_provenance` (the provenance block);
* :mod:`.plots` -- the bar chart (matplotlib, imported only when drawing);
* :mod:`.formats` -- :data:`FORMATS` and :func:`render`.
"""

from dcac_plugin.benchmark.leaderboard.build import build_tables
from dcac_plugin.benchmark.leaderboard.csv_table import CSV_FIELDS, render_csv
from dcac_plugin.benchmark.leaderboard.formats import FORMATS, RENDERERS, render
from dcac_plugin.benchmark.leaderboard.github import render_github
from dcac_plugin.benchmark.leaderboard.html_page import render_html
from dcac_plugin.benchmark.leaderboard.json_doc import JSON_SCHEMA, provenance_dict, render_json, tables_to_dict
from dcac_plugin.benchmark.leaderboard.latex import latex_escape, render_latex
from dcac_plugin.benchmark.leaderboard.markup import COMPUTED_MARK, FLAG_TEXT, TAG_TEXT, UNKNOWN, flag_text
from dcac_plugin.benchmark.leaderboard.model import (
    AVERAGE,
    BENCHMARK_CHOICES,
    METRIC_CHOICES,
    METRIC_LABEL,
    PAIR,
    PROTOCOL_CHOICES,
    PROTOCOL_FLAG,
    Cell,
    LeaderboardError,
    Row,
    RunValue,
    Table,
)
from dcac_plugin.benchmark.leaderboard.plots import plot_png, plot_tables
from dcac_plugin.benchmark.leaderboard.ranking import round1

__all__ = [
    "AVERAGE",
    "BENCHMARK_CHOICES",
    "COMPUTED_MARK",
    "CSV_FIELDS",
    "FLAG_TEXT",
    "FORMATS",
    "JSON_SCHEMA",
    "METRIC_CHOICES",
    "METRIC_LABEL",
    "PAIR",
    "PROTOCOL_CHOICES",
    "PROTOCOL_FLAG",
    "RENDERERS",
    "TAG_TEXT",
    "UNKNOWN",
    "Cell",
    "LeaderboardError",
    "Row",
    "RunValue",
    "Table",
    "build_tables",
    "flag_text",
    "latex_escape",
    "plot_png",
    "plot_tables",
    "provenance_dict",
    "render",
    "render_csv",
    "render_github",
    "render_html",
    "render_json",
    "render_latex",
    "round1",
    "tables_to_dict",
]
