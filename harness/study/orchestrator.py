"""A whole study: every (strategy x n_train) cell tuned study.tunings times on equal budgets by a few
worker processes (each tuning run its own Optuna study, its own search, seeds and validation draw),
each run's best re-run as replicates; adaptive (study.adaptive), more replicates or tuning runs
where the verdict is undecided and decides the headline, chosen by value of information, and more
sizes where n* is not yet bracketed (harness/study/adaptive.py); then the report. Re-running it resumes:
the storage says what is done, so only what is missing runs."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import ConfigError
from harness.settings.schema import CellConfig, StudyAppConfig
from harness.study.clock import StudyClock

if TYPE_CHECKING:  # the store's imports are deferred: the study's entry point starts before they load
    from harness.store.records import Caps


def cell_config(cfg: StudyAppConfig, strategy: str, n_train: int, run: int = 0) -> CellConfig:
    """The harness-tune config of tuning run `run` of one cell, cut from the study config. What the
    strategies must share to be compared at equal effort is set from all of them: the reference
    trial's steps (for tune.budget=flops) and the pruner's maximum resource, unless the study config
    sets them; every tuning run has the same budget."""
    from harness.tuning.replicates import tuning_run

    if strategy not in cfg.strategies:
        raise ConfigError(f"study.strategies names {strategy}, which has no strategy config: use finetune and/or scratch")
    low, high = steps_range(cfg)
    tune, pruner = cfg.tune, cfg.pruner
    if tune.reference_steps is None:
        tune = dataclasses.replace(tune, reference_steps=int(round((low + high) / 2)))
    if pruner.name == "hyperband" and pruner.max_resource is None:
        pruner = dataclasses.replace(pruner, max_resource=high)
    shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(CellConfig)}
    cell = CellConfig(**{**shared, "strategy": cfg.strategies[strategy], "search_space": cfg.search_spaces[strategy],
                         "data": dataclasses.replace(cfg.data, n_train=int(n_train)), "tune": tune, "pruner": pruner})
    return tuning_run(cell, run)


def steps_range(cfg: StudyAppConfig) -> tuple[int, int]:
    """The widest train.steps range across the study's strategies' search spaces: the lowest low,
    the highest high (a strategy that does not tune steps contributes train.steps)."""
    from harness.tuning.budget import steps_bounds

    spaces = cfg.search_spaces
    bounds = [steps_bounds(spaces.get(s), cfg.train.steps) for s in cfg.study.strategies]
    return min(b[0] for b in bounds), max(b[1] for b in bounds)


def grid(cfg: StudyAppConfig) -> list[tuple[str, int, int]]:
    """Every (strategy, n_train, tuning run) of the grid (settings checked at the door:
    StudyConfig.check), run 0 of every cell first so a stopped study has one of each."""
    return [(s, int(n), k) for k in range(cfg.study.tunings) for n in sorted(cfg.study.n_train)
            for s in cfg.study.strategies]


def key_of(cell: CellConfig) -> tuple[str, int, int]:
    return cell.strategy.name, cell.data.n_train, cell.tune.run


def run_dir(run_root: Path, cell: CellConfig) -> Path:
    run = cell.tune.run
    return Path(run_root) / (f"{cell.strategy.name}-n{cell.data.n_train}" + (f"-t{run}" if run else ""))


def check_study(cfg: StudyAppConfig) -> list[CellConfig]:
    """Every cell's config checked before any training or storage write; the storage is opened (and
    so made) unless the study is only planned."""
    from harness.store import records
    from harness.report import check_report_dir, check_report_settings
    from harness.tuning.tune import check_cell_config

    r = cfg.report
    check_report_settings(r.metric, r.n_boot, r.margin, r.horizon)  # now, not after hours of training
    check_report_dir(Path(r.dir))
    cells = [cell_config(cfg, s, n, k) for s, n, k in grid(cfg)]
    for cell in cells:
        check_cell_config(cell)
    if not cfg.study.plan:
        records.open_storage(cfg.storage, heartbeats=False)
    return cells


def _worker(cells: list[CellConfig], offset: int, run_root: str) -> None:
    """One process: tunes the cells starting from its own offset, joining any cell still open.

    First the tuning runs of each cell take their shared recipe trials together (harness/tuning/together.py).
    Then the first pass moves on as soon as a run's budget is spent; the second waits for the other
    workers' last trials, so that one dying (here or on another machine) is re-run, not left RUNNING.
    """
    from harness.tuning.together import tune_recipes_together
    from harness.tuning.tune import tune_cell

    order = cells[offset:] + cells[:offset]
    for runs in _by_cell(order):
        tune_recipes_together(runs, [run_dir(Path(run_root), c) for c in runs])
    for wait_for_peers in (False, True):
        for cfg in order:
            tune_cell(cfg, run_dir(Path(run_root), cfg), wait_for_peers=wait_for_peers)


def _by_cell(runs: list[CellConfig]) -> list[list[CellConfig]]:
    """The tuning runs grouped by cell (strategy, n_train), in the order each cell first appears."""
    groups: dict[tuple[str, int], list[CellConfig]] = {}
    for c in runs:
        groups.setdefault((c.strategy.name, c.data.n_train), []).append(c)
    return list(groups.values())


def _topup_worker(jobs: list[tuple[CellConfig, int]], offset: int, run_root: str) -> None:
    """One process: adds replicates to the cells of `jobs` (config, target), from its own offset;
    the cell's re-run lock keeps two workers off one cell."""
    from harness.tuning.rerun import extend_replicates
    from harness.tuning.tune import check_cell_config, open_cell

    for cfg, target in jobs[offset:] + jobs[:offset]:
        space, budget = check_cell_config(cfg)
        extend_replicates(open_cell(cfg, space, budget), cfg, space, run_dir(Path(run_root), cfg), target)


def _in_workers(target, jobs: list, workers: int, run_root: Path, tick) -> None:
    """target(jobs, offset, run_root) in `workers` spawned processes (in this one for a single
    worker), calling `tick()` every 10 s while they run."""
    workers = min(workers, len(jobs))
    if workers <= 1:
        target(jobs, 0, str(run_root))
        return
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=(jobs, i * len(jobs) // workers, str(run_root)), daemon=False)
             for i in range(workers)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            next(p for p in procs if p.is_alive()).join(timeout=10)
            tick()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise RuntimeError(f"{len(failed)} study worker(s) failed (exit codes {failed}); run the same command again to resume")


def _open(cfg: StudyAppConfig):
    """The study's storage, for reading what the workers wrote."""
    from harness.store import records
    return records.open_storage(cfg.storage, heartbeats=False)


def _trainings(cfg: StudyAppConfig, storage) -> tuple[int, int, int]:
    """(tuning runs with their re-runs done, trials, re-runs) the storage holds for this study."""
    from harness.store.records import cell_studies, n_trials_of

    done = trials = reruns = 0
    for record, _ in cell_studies(storage, cfg.study.name):
        trials += n_trials_of(storage, record.name)
        done += record.has_final
        reruns += len(record.final)
    return done, trials, reruns


def _per_run(cfg: StudyAppConfig) -> int:
    """Trainings one tuning run schedules: its trial budget and its re-runs."""
    return int(cfg.tune.n_trials or 0) + cfg.study.seeds


def _status(cfg: StudyAppConfig, storage, clock: StudyClock, phase: str, n_cells: int | None = None) -> None:
    done, trials, reruns = _trainings(cfg, storage)
    detail = f"tuning runs done {done}/{n_cells}, trials {trials}" if n_cells else f"re-runs {reruns}"
    clock.status(phase, detail, trials + reruns)
    # The study's W&B run grows as re-runs land; none has landed while the workers start (spawned, they
    # import for seconds), and the storage may hold no cell of this study yet, which _stored refuses.
    if clock.wandb is not None and reruns and reruns != clock.wandb.rows_logged:
        clock.wandb.update(_stored(cfg))


def _stored(cfg: StudyAppConfig) -> list:
    """The study's cells as stored (harness.report.cells.Cell)."""
    from harness.store.records import open_existing
    from harness.report.cells import load_cells

    storage, shown = open_existing(cfg.storage.url, cfg.storage.wal)
    return load_cells(storage, cfg.study.name, shown)


def _caps(cfg: StudyAppConfig) -> Caps:
    from harness.store.records import Caps

    return Caps(cfg.study.max_tunings, cfg.study.max_seeds, int(cfg.tune.n_trials or 0))


def _comparison(cfg: StudyAppConfig, stored: list | None = None):
    """The verdict as the report will state it, from the storage, and the stored tuning runs
    {(strategy, n_train, run): replicates}."""
    from harness.report import study_comparison

    cells = _stored(cfg) if stored is None else stored
    r = cfg.report
    comparison = study_comparison(cells, metric=r.metric, n_boot=r.n_boot, margin=r.margin,
                                  horizon=r.horizon, caps=_caps(cfg))
    return comparison, {(c.strategy, c.n_train, c.tuning): len(c.final) for c in cells}


def stored_sizes(cfg: StudyAppConfig) -> list[int]:
    """Sizes the storage holds cells of under study.name for the study's strategies (an earlier
    adaptive run's, a shell multirun's), finished or not; [] when the storage has none."""
    wanted = set(cfg.study.strategies)
    from harness.store.records import cell_studies

    return sorted({cell.n_train for _, cell in cell_studies(_open(cfg), cfg.study.name) if cell.strategy in wanted})


def stored_runs(cfg: StudyAppConfig) -> list[tuple[str, int, int]]:
    """(strategy, n_train, tuning run) the storage holds under study.name for the study's
    strategies, with every tuning run below the study's count at each stored size."""
    from harness.store.records import cell_studies

    wanted = set(cfg.study.strategies)
    found = {(c.strategy, c.n_train, c.tuning) for _, c in cell_studies(_open(cfg), cfg.study.name)
             if c.strategy in wanted}
    sizes = {n for _, n, _ in found}
    found |= {(s, n, k) for n in sizes for s in wanted for k in range(cfg.study.tunings)}
    return sorted(found, key=lambda x: (x[2], x[1], x[0]))


def _tune(cfg: StudyAppConfig, cells: list[CellConfig], run_root: Path, n_cells: int, clock: StudyClock,
          phase: str = "tuning") -> None:
    storage = _open(cfg)  # one connection pool for every poll, not one per poll
    _in_workers(_worker, list(cells), cfg.study.workers, run_root,
                lambda: _status(cfg, storage, clock, phase, n_cells))
    _status(cfg, storage, clock, phase, n_cells)


def refine(cfg: StudyAppConfig, cells: list[CellConfig], run_root: Path,
           clock: StudyClock | None = None) -> list[CellConfig]:
    """Add sizes between the two measured sizes that bracket n* (harness/study/adaptive.py), each with both
    strategies and the full tuning budget, then top them up, until the bracket is within
    study.bracket or study.max_cells / study.max_flops is spent. Returns every cell, added ones too."""
    from harness.study import adaptive
    from harness.tuning.tune import check_cell_config

    grid_sizes = {int(n) for n in cfg.study.n_train}
    strategies = list(cfg.study.strategies)
    cap_cells, cap_flops = cfg.study.max_cells, cfg.study.max_flops
    clock = clock or StudyClock(cfg.study.name)
    tried: set[int] = set()
    while True:
        stored = _stored(cfg)
        comparison, _ = _comparison(cfg, stored)
        plan = adaptive.next_size(comparison, cfg.study.bracket)
        if plan.size is None:
            clock.say(f"refinement done: {plan.reason}")
            return cells
        added = {c.n_train for c in stored} - grid_sizes
        spent = sum(c.spent_flops for c in stored)
        if plan.size in tried:
            clock.say(f"refinement stops: n = {plan.size} was tuned in this run and is still not measured by "
                      "both strategies (see its cells' failed trials)")
            return cells
        if cap_cells is not None and len(strategies) * (len(added - {plan.size}) + 1) > int(cap_cells):
            clock.say(f"refinement stops: {plan.reason}, but study.max_cells={cap_cells} allows no more cells "
                      f"({len(added)} size(s) added already); raise it to pin n* closer")
            return cells
        if cap_flops is not None and spent >= float(cap_flops):
            clock.say(f"refinement stops: {plan.reason}, but the study has spent {spent:.3g} FLOPs of "
                      f"study.max_flops={float(cap_flops):.3g}; raise it to pin n* closer")
            return cells
        clock.say(f"refining: {plan.reason}, both strategies, the full tuning budget")
        tried.add(plan.size)
        new = [cell_config(cfg, s, plan.size, k) for k in range(cfg.study.tunings) for s in strategies]
        for cell in new:
            check_cell_config(cell)
        cells = cells + [c for c in new if key_of(c) not in {key_of(x) for x in cells}]
        clock.add(len(new) * _per_run(cfg))
        _tune(cfg, new, run_root, len(cells), clock, "refinement")
        cells = top_up(cfg, cells, run_root, clock)


def _unit_costs(stored: list) -> tuple[float, float]:
    """(FLOPs of a trial, FLOPs of a re-run), as this study measured them so far."""
    trials = [t.spent_flops for c in stored for t in c.trials if t.spent_flops > 0]
    reruns = [r.flops for c in stored for r in c.final if r.flops]
    trial = sum(trials) / len(trials) if trials else 1.0
    return trial, (sum(reruns) / len(reruns) if reruns else trial)


def top_up(cfg: StudyAppConfig, cells: list[CellConfig], run_root: Path,
           clock: StudyClock | None = None) -> list[CellConfig]:
    """More measurement where it matters: while sizes that decide the headline are undecided and the
    caps can decide them, each such size gets the addition that narrows its interval most per FLOP
    (harness.study.adaptive.topup_plan): `study.topup_step` more replicates on every tuning run (up to
    `study.max_seeds`) or one more tuning run of both strategies (up to `study.max_tunings`), a round
    at a time. Every round re-reads the storage, so a rerun (or another machine) continues where it
    stopped. Returns every tuning run, added ones too."""
    from harness.study.adaptive import topup_plan
    from harness.tuning.tune import check_cell_config

    strategies = list(cfg.study.strategies)
    clock = clock or StudyClock(cfg.study.name)
    storage = _open(cfg)
    while True:
        stored = _stored(cfg)
        comparison, counts = _comparison(cfg, stored)
        _show_verdict(clock, comparison)
        runs = {n: min(sum(1 for (s2, n2, _) in counts if (s2, n2) == (s, n)) for s in strategies)
                for n in {n for (_, n, _) in counts}}
        reps = {n: min((v for (s2, n2, _), v in counts.items() if n2 == n and s2 in strategies), default=0)
                for n in runs}
        trial, rerun = _unit_costs(stored)
        plan = topup_plan(comparison, runs, reps, max_tunings=cfg.study.max_tunings,
                          max_seeds=cfg.study.max_seeds, step=cfg.study.topup_step, trial_flops=trial,
                          replicate_flops=rerun, trials_per_run=int(cfg.tune.n_trials or 0))
        if not plan:
            undecided = [p.n for p in comparison.per_n if p.decide is not None]
            if undecided:
                clock.say(f"n = {undecided} undecided; what would decide them is beyond study.max_tunings="
                          f"{cfg.study.max_tunings} / study.max_seeds={cfg.study.max_seeds} (the report says what would)")
            return cells
        clock.say(f"verdict {comparison.status} ({comparison.reason}); adding: "
                  + "; ".join(a.reason for a in plan))
        before = sum(counts.values()) + len(counts)
        new = [cell_config(cfg, s, a.n, k) for a in plan if a.action == "tuning_runs"
               for k in range(runs[a.n], a.target) for s in strategies]
        for cell in new:
            check_cell_config(cell)
        known = {key_of(c) for c in cells}
        cells = cells + [c for c in new if key_of(c) not in known]
        if new:
            clock.add(len(new) * _per_run(cfg))
            _tune(cfg, new, run_root, len(cells), clock, "top-up")
        by_key = {key_of(c): c for c in cells}
        jobs = [(by_key[(s, a.n, k)], a.target) for a in plan if a.action == "replicates"
                for (s, n, k) in sorted(counts) if n == a.n and s in strategies and (s, n, k) in by_key
                and counts[(s, n, k)] < a.target]
        if jobs:
            clock.add(sum(target - counts[key_of(c)] for c, target in jobs))
            _in_workers(_topup_worker, jobs, cfg.study.workers, run_root,
                        lambda: _status(cfg, storage, clock, "top-up"))
            _status(cfg, storage, clock, "top-up")
        after = _stored(cfg)  # a count of what is stored: no need to re-derive the verdict for it
        if sum(len(c.final) for c in after) + len(after) == before:
            return cells  # nothing could be added (a run's best changed since its re-run): leave it to the next run


def _show_verdict(clock: StudyClock, comparison) -> None:
    """The verdict so far in the study's W&B run (when it has one)."""
    if clock.wandb is not None:
        from harness.report.answer import headline_line
        from harness.report.crossover import Crossover

        clock.wandb.verdict(comparison, headline_line(Crossover.of(comparison)))


def run_study(cfg: StudyAppConfig, run_root: Path) -> dict:
    """Pretrain when needed, tune every cell, re-run the bests; with study.adaptive, add replicates
    where the verdict needs them and sizes where n* is not yet bracketed; build the report; returns
    its summary."""
    from harness.report import build_report

    cells = check_study(cfg)
    clock = StudyClock(cfg.study.name)
    if cfg.logger.name == "wandb":
        from harness.study.wandb_study import StudyRun

        clock.wandb = StudyRun(cfg)
    needs_source = [c for c in cells if c.strategy.name == "finetune" and c.strategy.weights == "source"]
    if needs_source:
        from harness.training.pretrain import ensure_pretrained

        pretrained = ensure_pretrained(needs_source[0])
        clock.say(f"source model: {pretrained.weights} (source val_acc {pretrained.meta['source_val_acc']:.4f})")
    adaptive = cfg.study.adaptive
    if adaptive:  # sizes and tuning runs an earlier run added are finished and counted like the grid's
        known = {key_of(c) for c in cells}
        extra = [cell_config(cfg, s, n, k) for s, n, k in stored_runs(cfg) if (s, n, k) not in known]
        cells += extra
    clock.add(len(cells) * _per_run(cfg))
    _tune(cfg, cells, run_root, len(cells), clock)
    if adaptive:
        cells = top_up(cfg, cells, run_root, clock)
        refine(cfg, cells, run_root, clock)
    logger = cfg.logger if cfg.logger.name == "wandb" else None
    r = cfg.report
    if clock.wandb is not None:
        clock.wandb.update(_stored(cfg))
        _show_verdict(clock, _comparison(cfg)[0])
    clock.say("building the report")
    summary = build_report(cfg.storage.url, cfg.study.name, Path(r.dir), metric=r.metric,
                           n_boot=r.n_boot, margin=r.margin, horizon=r.horizon, wandb_cfg=logger,
                           sqlite_wal=cfg.storage.wal)
    if clock.wandb is not None:
        clock.wandb.finish(summary)
    clock.say("done")
    clock.close()
    return summary
