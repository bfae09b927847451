"""The study in W&B while it runs: one run (job_type "study", group = the study) that harness-study
keeps open from start to report, updated from the storage whenever a re-run lands: a table of every
re-run (n_train, strategy, tuning run, replicate, status, val, test, FLOPs), the per-size gap with
its simultaneous band as a W&B line plot once a verdict can be read, and the headline in the
summary. Trials and re-runs are W&B runs of their own (job_type "trial" / "rerun", written by the
workers). wandb is imported only when logger=wandb."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.settings.schema import StudyAppConfig

COLUMNS = ["n_train", "strategy", "tuning_run", "replicate", "status", "val_acc", "test_acc", "flops"]


def rerun_rows(stored: list) -> list[list[Any]]:
    """One row per stored re-run of the study's cells (harness.report.cells.Cell), in a stable order."""
    rows = []
    for cell in sorted(stored, key=lambda c: (c.n_train, c.strategy, c.tuning)):
        for r in cell.final:
            rows.append([cell.n_train, cell.strategy, cell.tuning, r.replicate, r.status, r.val_acc, r.test_acc, r.flops])
    return rows


class StudyRun:
    """The open W&B run of a study (see the module docstring)."""

    def __init__(self, cfg: StudyAppConfig):
        import wandb

        from harness.settings.schema import as_dict
        from harness.training.loggers import wandb_mode

        logger = cfg.logger
        save_dir = Path(str(logger.dir or "outputs")).resolve()  # absolute: W&B's service may run in another folder
        save_dir.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in as_dict(cfg).items() if k not in ("storage", "search_spaces", "strategies")}
        self.name = cfg.study.name
        self.run = wandb.init(project=str(logger.project or "harness"), entity=logger.entity, mode=wandb_mode(logger),
                              dir=str(save_dir), job_type="study", group=self.name, name=f"study-{self.name}",
                              config=config, reinit="create_new")
        self.rows_logged = -1
        self.step = 0

    def update(self, stored: list) -> bool:
        """Log the re-runs table when it has grown; True when it did."""
        import wandb

        rows = rerun_rows(stored)
        if len(rows) == self.rows_logged:
            return False
        self.rows_logged = len(rows)
        self.run.log({"reruns": wandb.Table(columns=COLUMNS, data=rows), "reruns_done": len(rows)}, step=self._next())
        return True

    def verdict(self, comparison, headline: str) -> None:
        """The per-size gap with its band as a W&B plot and table; the headline in the summary."""
        import wandb

        rows = [p for p in comparison.per_n if p.gap is not None]
        if rows:
            xs = [int(p.n) for p in rows]
            series = [[float(p.gap) for p in rows], [float(p.band95[0]) for p in rows], [float(p.band95[1]) for p in rows]]
            table = wandb.Table(columns=["n_train", "gap", "band_low", "band_high", "verdict"],
                                data=[[x, g, lo, hi, p.verdict] for x, g, lo, hi, p in zip(xs, *series, rows)])
            self.run.log({"gap_by_size": table,
                          "gap": wandb.plot.line_series(xs=xs, ys=series, keys=["gap", "band low", "band high"],
                                                        title="fine-tune minus scratch, with the simultaneous 95% band",
                                                        xname="n_train")}, step=self._next())
        self.run.summary["status"] = comparison.status
        self.run.summary["headline"] = headline
        if comparison.n_star is not None:
            self.run.summary["n_star"] = float(comparison.n_star)

    def _next(self) -> int:
        self.step += 1
        return self.step

    def finish(self, summary: dict | None = None) -> None:
        for key in ("verdict", "report_html"):
            if summary and summary.get(key) is not None:
                self.run.summary[key] = str(summary[key])
        self.run.finish()
