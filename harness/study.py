"""A whole study: every (strategy x n_train) cell tuned on equal budgets by a few worker processes,
each cell's best re-run with seeds, then the report. Re-running it resumes: the storage says what
is done, so only what is missing runs."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError


def cell_config(cfg: DictConfig, strategy: str, n_train: int) -> DictConfig:
    """The harness-tune config of one cell, cut from the study config."""
    cell = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    if strategy not in cell.strategies:
        raise ConfigError(f"study.strategies names {strategy}, which has no strategy config: use finetune and/or scratch")
    cell.strategy = cell.strategies[strategy]
    cell.search_space = cell.search_spaces[strategy]
    cell.data.n_train = int(n_train)
    for key in ("strategies", "search_spaces", "report"):
        cell.pop(key, None)
    return cell


def grid(cfg: DictConfig) -> list[tuple[str, int]]:
    sizes = cfg.study.n_train
    if not OmegaConf.is_list(sizes) or not sizes or not all(isinstance(n, int) and not isinstance(n, bool) for n in sizes):
        raise ConfigError(f"study.n_train={sizes} must be a non-empty list of integers, e.g. study.n_train=[10,20,40]")
    if len(set(sizes)) != len(sizes):
        raise ConfigError(f"study.n_train={list(sizes)} repeats a size: list each size once")
    strategies = list(cfg.study.strategies)
    if not strategies or len(set(strategies)) != len(strategies):
        raise ConfigError(f"study.strategies={strategies} must list distinct strategies, e.g. [finetune, scratch]")
    workers = cfg.study.workers
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"study.workers={workers} must be a positive integer")
    return [(s, int(n)) for n in sorted(sizes) for s in strategies]


def check_study(cfg: DictConfig) -> list[DictConfig]:
    """Every cell's config checked before any training or storage write."""
    from harness.storage import open_storage
    from harness.tuning import check_cell_config

    cells = [cell_config(cfg, s, n) for s, n in grid(cfg)]
    for cell in cells:
        check_cell_config(cell)
    open_storage(str(cfg.storage.url), heartbeat_interval=None)
    return cells


def _worker(cells: list[dict], offset: int, run_root: str) -> None:
    """One process: tunes the cells starting from its own offset, joining any cell still open.

    The first pass moves on as soon as a cell's budget is spent; the second waits for the other
    workers' last trials, so that one dying (here or on another machine) is re-run, not left RUNNING.
    """
    from harness.tuning import tune_cell

    order = cells[offset:] + cells[:offset]
    for wait_for_peers in (False, True):
        for cell in order:
            cfg = OmegaConf.create(cell)
            tune_cell(cfg, Path(run_root) / f"{cfg.strategy.name}-n{cfg.data.n_train}", wait_for_peers=wait_for_peers)


def _progress(cfg: DictConfig, n_cells: int, started: float) -> tuple[int, int]:
    import optuna

    from harness.storage import open_storage

    storage = open_storage(str(cfg.storage.url), heartbeat_interval=None)
    prefix = f"{cfg.study.name}/"
    done = trials = 0
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if summary.study_name.startswith(prefix):
            trials += summary.n_trials
            done += "final" in summary.user_attrs
    elapsed = time.perf_counter() - started
    budget = int(cfg.tune.n_trials or 0) * n_cells
    eta = f"{elapsed / trials * max(0, budget - trials):.0f}s" if trials and budget else "-"
    print(f"[{cfg.study.name}] cells done {done}/{n_cells}, trials {trials}/{budget or '?'}, elapsed {elapsed:.0f}s, eta {eta}",
          file=sys.stderr, flush=True)
    return done, trials


def run_study(cfg: DictConfig, run_root: Path) -> dict:
    """Pretrain when needed, tune every cell, re-run the bests, build the report; returns its summary."""
    from harness.report import build_report

    cells = check_study(cfg)
    needs_source = [c for c in cells if c.strategy.name == "finetune" and str(c.strategy.weights) == "source"]
    if needs_source:
        from harness.pretrain import ensure_pretrained

        pretrained = ensure_pretrained(needs_source[0])
        print(f"[{cfg.study.name}] source model: {pretrained.weights} (source val_acc {pretrained.meta['source_val_acc']:.4f})",
              file=sys.stderr, flush=True)
    plain = [OmegaConf.to_container(c, resolve=True) for c in cells]
    started = time.perf_counter()
    workers = min(int(cfg.study.workers), len(cells))
    if workers == 1:
        _worker(plain, 0, str(run_root))
    else:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(plain, i * len(cells) // workers, str(run_root)), daemon=False)
                 for i in range(workers)]
        for p in procs:
            p.start()
        try:
            while any(p.is_alive() for p in procs):
                next(p for p in procs if p.is_alive()).join(timeout=10)
                _progress(cfg, len(cells), started)
        except KeyboardInterrupt:
            for p in procs:
                p.terminate()
            raise
        failed = [p.exitcode for p in procs if p.exitcode]
        if failed:
            raise RuntimeError(f"{len(failed)} study worker(s) failed (exit codes {failed}); run the same command again to resume")
    _progress(cfg, len(cells), started)
    logger = cfg.logger if str(cfg.logger.name) == "wandb" else None
    return build_report(str(cfg.storage.url), str(cfg.study.name), Path(str(cfg.report.dir)),
                        metric=str(cfg.report.metric), n_boot=int(cfg.report.n_boot), wandb_cfg=logger)
