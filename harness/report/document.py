"""The report document: its text (the verdict lines, the sections) from the Report
(harness/report/contents.py), and `Document`, rendered to Markdown and to one self-contained HTML page."""

from __future__ import annotations

import base64
import functools
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import jinja2
import markupsafe
import numpy as np
import pandas as pd

from harness.report.cells import Cell, strategy_rank
from harness.report.answer import (
    answer_lines, answer_sentences, answer_table, band_note, details, per_size_table, settled_line, transfer_table,
)
from harness.report.anytime import winner_summary
from harness.report.contents import Report
from harness.report.crossover import Crossover, Source
from harness.report.frames import EDGE_FRACTION, MIN_TRIALS_FOR_IMPORTANCE, edge_flags
from harness.report.tables import (
    budget_notes, comparison_table, compute_table, failed_counts, failed_rerun_notes, per_size_comparison,
)

PLOT_FILES = {
    "learning_curves": "learning_curves.png",
    "error_rate": "error_rate.png",
    "gap": "gap.png",
    "effective_data": "effective_data.png",
    "winner_map": "winner_map.png",
    "anytime": "anytime.png",
}


# ============================================================================ the document


def build_document(report: Report, pngs: Mapping[str, bytes]) -> Document:
    """report.md / report.html from the report and its figures (PNG bytes by PLOT_FILES' key)."""
    cells, crossover, metric, n_val, table = report.cells, report.crossover, report.metric, report.n_val, report.table
    doc = Document(f"Fine-tune vs from scratch: {report.study}")
    sizes = sorted({c.n_train for c in cells})
    first = cells[0].record
    seeds = sorted({len(c.final) for c in cells if c.final})
    margin = crossover.margin
    source = crossover.source or Source("unknown")
    doc.heading("The answer")
    doc.para(answer_sentences(crossover))
    if "gap" in pngs:
        doc.image(PLOT_FILES["gap"], "The gap per size: simultaneous 95% band, pointwise 95% intervals and the margin",
                  pngs["gap"])
    doc.heading("How it was measured")
    doc.para(
        f"**Margin: +-{margin:g} {metric}** (`report.margin`, declared before the results): a difference smaller than "
        "this does not matter here. A size is called better only when the whole "
        + ("simultaneous 95% band of the gap (across the measured sizes) "
           if crossover.band is not None and crossover.band.critical is not None else "95% interval of the gap ")
        + "lies beyond it, equivalent only when it lies inside it, and inconclusive otherwise. "
        f"**Source model:** {source.origin}"
        + (f", source-task accuracy {source.source_task_acc:.3f}" if source.source_task_acc is not None else "")
        + _pretraining_words(source) + "."
    )
    doc.para(
        f"Storage `{report.storage}`, {len(cells)} cells ({', '.join(sorted({c.strategy for c in cells}, key=strategy_rank))} "
        f"x n_train in {sizes}), model `{first.model or '?'}`, data `{first.data or '?'}`, "
        f"{'/'.join(map(str, seeds)) or 'no'} replicates of the best configuration per cell{_runs_words(crossover)}. Generated "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from the Optuna storage alone."
    )
    doc.para(_selection_text(cells, n_val))

    doc.heading("Verdict: how much data until scratch catches up")
    doc.para(f"**{report.headline}.**")
    settled = settled_line(crossover)
    if settled:
        doc.para(settled)
    doc.bullets(answer_lines(crossover))
    answers = answer_table(crossover, failed_counts(cells))
    if not answers.empty:
        doc.para(f"Per size, what the measurements say (gap = fine-tune minus scratch, in percentage points of "
                 f"{metric}): P(gap <= margin) over the bootstrap draws; the one-sided 97.5% upper bound on fine-tune's "
                 "advantage (\"pretraining is worth at most\"); the smallest margin this design resolves with 80% "
                 "power (a zero gap shown equivalent within it); where the gap's variance comes from; the tuning runs, "
                 "replicates and failed re-runs behind it; and, for an undecided size, what would decide it.")
        doc.table(answers)
    doc.bullets(details(crossover))
    doc.para(band_note(crossover))
    doc.table(per_size_table(crossover, report.values, n_val, metric))
    failures = failed_rerun_notes(cells)
    if failures:
        doc.para("**Re-runs that did not end ok** (stored with their reason; the cell went on): a failed re-run is "
                 "left out of the statistics, a diverged one counts at chance accuracy, a collapsed one is kept as "
                 "measured.")
        doc.bullets(failures)

    doc.heading("Learning curves")
    doc.image(PLOT_FILES["learning_curves"], "Best-found accuracy vs n_train, fitted curves and n*",
              pngs["learning_curves"])
    if "error_rate" in pngs:
        doc.image(PLOT_FILES["error_rate"], "Error rate (1 - accuracy) vs n_train on log-log axes", pngs["error_rate"])

    doc.heading("Effective data transferred")
    doc.para("D_E is the n at which scratch's fitted curve reaches fine-tune's mean accuracy at D_F = n_train; "
             "D_T = D_E - D_F (negative: pretraining hurts), multiplier = (D_F + D_T) / D_F, each with a 95% "
             "interval from the same bootstrap replicates as the verdict. A row is unstable when its interval is "
             "open, spans zero, or spans more than a factor of 4; extrapolated rows rest on scratch's fitted curve "
             "beyond its measured sizes.")
    doc.image(PLOT_FILES["effective_data"], "Effective data transferred D_T and the data multiplier",
              pngs["effective_data"])
    if report.transfer:
        doc.table(transfer_table(report.transfer, n_val, crossover.n_labelled_by_n_train))

    doc.heading("Winner map: data size x compute")
    doc.para("Each square compares the best validation accuracy each strategy had found once its cell had spent "
             "that many FLOPs (trials in completion order; pruned and failed trials' FLOPs count), with the "
             f"verdict's rule: the 95% interval of the gap (binomial noise of each validation split) against the "
             f"margin +-{margin:g}. Not measured: a strategy had completed no trial by then, or "
             "the budget is more than the cell spent. "
             + ("Right panel: fine-tune's compute includes its pretraining." if report.missing_panel is None
                else report.missing_panel))
    doc.image(PLOT_FILES["winner_map"], "Winner map without and with pretraining FLOPs" if report.missing_panel is None
              else "Winner map without pretraining FLOPs", pngs["winner_map"])
    doc.bullets(winner_summary(report.maps))

    doc.heading("Anytime performance")
    doc.image(PLOT_FILES["anytime"], "Best-so-far validation accuracy vs cumulative FLOPs per cell", pngs["anytime"])

    doc.heading("The comparison, measured")
    doc.table(comparison_table(table, crossover, report.transfer, report.pretraining, metric))
    doc.table(per_size_comparison(table, metric))

    doc.heading("Compute")
    doc.para("Per cell: all trials (complete, pruned, failed) of tuning, then the re-runs of the best configuration. "
             "Pretraining is listed once per pretrained checkpoint.")
    doc.table(compute_table(table, report.pretraining))
    doc.bullets(budget_notes(cells, table))

    doc.heading("Search-space checks")
    edge_rows = []
    for c in cells:
        for f in edge_flags(c.best_params(), c.search_space()):
            edge_rows.append({"cell": c.name, "parameter": f.param, "best value": f.value, "range low": f.low,
                              "range high": f.high, "at edge": f.side, "position in range": f.position})
    if edge_rows:
        doc.para(f"**{len(edge_rows)} best parameter value(s) lie within {EDGE_FRACTION:.0%} of an end of their range** "
                 "(log-aware): the optimum may lie outside the search space; consider widening it. A parameter the best "
                 "trial did not use (its `when` condition failed) is not among its values, so it is never flagged.")
        doc.table(pd.DataFrame(edge_rows))
    else:
        doc.para(f"No best parameter lies within {EDGE_FRACTION:.0%} of an end of its range.")
    imp = report.importances
    if not imp.empty:
        doc.para(f"Parameter importances (fANOVA), per cell with >= {MIN_TRIALS_FOR_IMPORTANCE} complete trials, "
                 "averaged per strategy (`*_cells`: how many cells were averaged). The parameters every trial uses "
                 "are assessed together on all complete trials. A parameter only some trials use (a `when` "
                 "condition, e.g. freeze_stages only where mode=freeze) is assessed among the trials that used it: "
                 "a fANOVA of its own on those trials alone, over it and the always-used parameters, its share in "
                 f"that fit reported (>= {MIN_TRIALS_FOR_IMPORTANCE} such trials per cell). `*_trials`: complete "
                 "trials that used the parameter / complete trials, summed over the averaged cells; below all, "
                 "the number rests on those trials only and comes from its own fit: compare it with the others "
                 "with care.")
        doc.table(imp.reset_index(names="parameter"))
    else:
        doc.para("Parameter importances: not computable (too few complete trials).")
    doc.bullets([f"importance skipped for {n}" for n in report.importance_notes])

    doc.heading("Files")
    doc.bullets(["`trials.csv`: every trial of every cell", "`cells.csv`: one row per cell",
                 "`crossover.json`: the verdict (status, per-size verdicts, n*, intervals)", "`effective_data.csv`, `winner_map.csv`: plotted numbers"]
                + [f"`{f}`" for f in PLOT_FILES.values()])
    return doc


def _selection_text(cells: Sequence[Cell], n_val: Mapping[int, int | None]) -> str:
    """Which protocol chose the configurations and how many labels each size really used."""
    protocols = sorted({c.selection for c in cells})
    head = "**Labelled data used for model selection** (Perez et al. 2021; `n_labelled` in every table): "
    if protocols == ["cv"]:
        return (head + "every configuration was chosen by k-fold cross-validation inside the n_train examples "
                "(`tune.selection=cv`); the validation split was never read, so n_labelled = n_train.")
    val_sizes = sorted({v for v in n_val.values() if v})
    val_text = (f"{val_sizes[0]} labelled examples" if len(val_sizes) == 1
                else "per size: " + ", ".join(f"n_train {n}: {v}" for n, v in sorted(n_val.items())))
    bigger = [n for n, v in n_val.items() if v is not None and v > n]
    text = (head + f"configurations were chosen on a validation set of {val_text} (`tune.selection=holdout`), in "
            "addition to n_train, so n_labelled = n_train + n_val. "
            + (f"At n_train in {sorted(bigger)} the validation set is larger than the training set: the tuned "
               "results there use more labelled data than n_train suggests." if bigger else
               "The validation set is never larger than the training set."))
    if len(protocols) > 1:
        text += " **The cells mix protocols (holdout and cv): compare them with care.**"
    return text


def _runs_words(crossover: Crossover) -> str:
    """How many tuning runs each cell's replicates come from (said only when some cell has more than one)."""
    runs = sorted({int(k) for p in crossover.per_n for k in p.tuning_runs.values()})
    if not runs or runs == [1]:
        return ""
    return f" (over {'/'.join(map(str, runs))} tuning runs per cell, each its own search, its winner re-run)"


def _pretraining_words(source: Source) -> str:
    """The source block's pretraining FLOPs: a number (measured or declared) or "unknown", never 0."""
    if source.flops_known:
        return f", pretraining {source.pretrain_flops:.3g} FLOPs ({source.pretrain_flops_from or 'measured'})"
    if source.pretrain_flops_from is None and source.pretrain_flops is None:
        return ""  # no fine-tune cells: no pretraining to speak of
    return ", pretraining FLOPs unknown (not measured here; declare them with strategy.pretrain_flops)"


@dataclass
class Document:
    """A small block list rendered to both Markdown and one self-contained HTML page."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, frame: pd.DataFrame) -> None:
        self.blocks.append(("table", frame))

    def image(self, filename: str, alt: str, png: bytes) -> None:
        self.blocks.append(("img", (filename, alt, png)))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, body in self.blocks:
            if kind == "h":
                out += [f"{'#' * body[0]} {body[1]}", ""]
            elif kind == "p":
                out += [body, ""]
            elif kind == "ul":
                out += [f"- {item}" for item in body] + [""]
            elif kind == "table":
                cols = [str(c) for c in body.columns]
                out.append("| " + " | ".join(_md_cell(c) for c in cols) + " |")
                out.append("|" + "|".join("---" for _ in cols) + "|")
                for row in body.itertuples(index=False):
                    out.append("| " + " | ".join(_md_cell(_cell_text(v)) for v in row) + " |")
                out.append("")
            elif kind == "img":
                out += [f"![{body[1]}]({body[0]})", ""]
        return "\n".join(out)

    def html(self) -> str:
        """The page from templates/report.html.j2 (autoescaped): text, tables and plots inline."""
        return _page_template().render(title=self.title, blocks=[_html_block(kind, body) for kind, body in self.blocks])


def _html_block(kind: str, body: Any) -> dict[str, Any]:
    """One block as the template reads it: table cells as text, a plot as its base64 data."""
    if kind == "h":
        return {"kind": kind, "level": body[0], "text": body[1]}
    if kind == "p":
        return {"kind": kind, "text": body}
    if kind == "ul":
        return {"kind": kind, "bullets": body}
    if kind == "table":
        return {"kind": kind, "columns": [str(c) for c in body.columns],
                "rows": [[_cell_text(v) for v in row] for row in body.itertuples(index=False)]}
    filename, alt, png = body
    return {"kind": kind, "filename": filename, "alt": alt, "data": base64.b64encode(png).decode("ascii")}


@functools.cache
def _page_template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness.report", "templates"), autoescape=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["inline"] = _inline
    return env.get_template("report.html.j2")


def _inline(text: str) -> markupsafe.Markup:
    """Escaped text with its **bold** and `code` as HTML."""
    out = str(markupsafe.escape(text))
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return markupsafe.Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", out))


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _cell_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}"
    return str(v)
