"""What a study will do before it does it (`harness-study study.plan=true`): the tuning runs, the
budgets, the trainings and their FLOPs, and a time from a few timed steps on this machine.

The estimate is for the grid as configured, before pruning (Hyperband stops some trials early, so
trials cost less) and before the adaptive additions (the top-up and the refinement, bounded by the
caps, which the plan states). A trial's cost: the first trials are the search space's recipes, each
at its own steps and batch size; the sampled ones at the midpoint of the steps range and the mean
over the batch-size choices; a re-run at the mean of the recipes (with 5 trials the winner is most
often one). Batch sizes are capped at n_train, as training caps them. Time per run = the fixed cost
of a run plus steps x time per step at its batch size, both fitted from two short real trainings
per batch size (10 and 60 steps, the cell's model, data and validation cadence, one thread), then
divided among the workers."""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.settings.schema import CellConfig, StudyAppConfig, StudyConfig
from harness.study.clock import clock_text

SHORT, LONG = 10, 60  # the two timed trainings per batch size


@dataclass(frozen=True)
class RunCost:
    steps: int
    batch: int


@dataclass(frozen=True)
class StepTiming:
    fixed_s: float          # a run's cost outside its steps (set-up, final validation)
    step_s: float           # one optimizer step, validations every val_every included
    flops_per_step: float


@dataclass
class Plan:
    study: str
    runs: list[tuple[str, int, int]]
    trials_per_run: int
    seeds: int
    workers: int
    pretrain_needed: bool
    trainings: int = 0
    flops: float = 0.0
    seconds: float = 0.0
    pretrain_s: float = 0.0
    per_size: dict[int, dict[str, float]] = dataclasses.field(default_factory=dict)
    adaptive: StudyConfig | None = None  # the study's settings when it is adaptive: the caps the plan states
    timings: dict[int, StepTiming] = dataclasses.field(default_factory=dict)

    def text(self) -> str:
        sizes = sorted({n for _, n, _ in self.runs})
        strategies = sorted({s for s, _, _ in self.runs})
        k = max(r for _, _, r in self.runs) + 1 if self.runs else 0
        lines = [f"plan for study {self.study}: {len(strategies)} strategies ({', '.join(strategies)}) x "
                 f"{len(sizes)} sizes {sizes} x {k} tuning runs = {len(self.runs)} tuning runs, each "
                 f"{self.trials_per_run} trials then {self.seeds} re-runs of its best",
                 f"trainings: {self.trainings} ({len(self.runs) * self.trials_per_run} trials before pruning, "
                 f"{len(self.runs) * self.seeds} re-runs)"
                 + (" (a FLOPs budget without tune.n_trials: its trials are not counted)" if not self.trials_per_run else "")
                 + ("; plus one pretraining of the source model" if self.pretrain_needed else "; source model cached"),
                 f"training FLOPs: about {self.flops:.2e} (trials at full length: pruning makes it less)",
                 f"time: about {clock_text(self.seconds)} on {self.workers} workers"
                 + (f", of which pretraining {clock_text(self.pretrain_s)}" if self.pretrain_needed else "")
                 + " (from timed steps on this machine: "
                 + ", ".join(f"batch {b}: {t.step_s * 1e3:.1f} ms/step + {t.fixed_s:.2f} s a run"
                             for b, t in sorted(self.timings.items())) + ")",
                 "per size (tuning runs, trainings, FLOPs, time on one worker):"]
        for n in sizes:
            row = self.per_size[n]
            lines.append(f"  n = {n}: {row['runs']:.0f} runs, {row['trainings']:.0f} trainings, {row['flops']:.2e} FLOPs, "
                         f"{clock_text(row['seconds'])}")
        if self.adaptive is not None:
            a = self.adaptive
            lines.append(f"then, adaptive: the top-up may add tuning runs up to {a.max_tunings} a cell and "
                         f"re-runs up to {a.max_seeds} a run where the verdict needs them, and the refinement "
                         f"up to {a.max_cells} cells (not in the figures above)")
        lines.append("nothing was trained: run without study.plan=true to start")
        return "\n".join(lines)


def _costs(cell: CellConfig) -> tuple[list[RunCost], list[RunCost]]:
    """(the recipe trials, in order; a sampled trial: each batch-size choice at the middle steps)."""
    from harness.tuning.budget import steps_bounds

    n = cell.data.n_train
    space = cell.search_space
    params = space.params or {}
    low, high = steps_bounds(space, cell.train.steps)
    mid = int(round((low + high) / 2))
    choices = (params.get("batch_size") or {}).get("choices") or [cell.train.batch_size]
    sampled = [RunCost(mid, min(int(b), n)) for b in choices]
    recipes = []
    if cell.tune.enqueue_recipe:
        for values in (space.recipes or {}).values():
            recipes.append(RunCost(int(values.get("steps", mid)), min(int(values.get("batch_size", cell.train.batch_size)), n)))
    return recipes, sampled


def _time_batch(cell: CellConfig, batch: int, root: Path) -> StepTiming:
    """Two short real trainings of the cell's model at this batch size: the fixed cost and the step."""
    from harness.training.run import run_training

    def one(steps: int) -> tuple[float, float]:
        cfg = dataclasses.replace(
            cell, strategy=dataclasses.replace(cell.strategy, name="scratch", mode="full"),
            train=dataclasses.replace(cell.train, steps=steps, batch_size=batch),
            data=dataclasses.replace(cell.data, n_train=max(batch, cell.data.n_train)),
            logger=dataclasses.replace(cell.logger, name="none"))
        started = time.perf_counter()
        result = run_training(cfg, root / f"b{batch}-s{steps}", evaluate_test=False)
        return time.perf_counter() - started, float(result.compute.flops_per_step)

    one(SHORT)  # warm: the pool, first-call initialisation
    short = min(one(SHORT)[0] for _ in range(2))
    long_s, flops = one(LONG)
    step = max((long_s - short) / (LONG - SHORT), 1e-6)
    return StepTiming(fixed_s=max(short - SHORT * step, 0.0), step_s=step, flops_per_step=flops)


def plan_study(cfg: StudyAppConfig) -> dict:
    """harness-study study.plan=true: every cell checked as for a run (the storage left untouched),
    then the plan; returns its text and figures."""
    from harness.study.orchestrator import check_study

    check_study(cfg)
    plan = make_plan(cfg)
    return {"plan": plan.text(), "seconds": plan.seconds, "flops": plan.flops, "trainings": plan.trainings}


def make_plan(cfg: StudyAppConfig) -> Plan:
    """The plan of cfg's grid (nothing stored, nothing trained but the timed steps)."""
    import torch

    from harness.study.orchestrator import cell_config, grid
    from harness.training.source_cache import find_pretrained

    runs = grid(cfg)
    cells = {(s, n, k): cell_config(cfg, s, n, k) for s, n, k in runs}
    n_trials = int(cfg.tune.n_trials or 0)  # tune.budget=flops without n_trials: its trials are not known ahead
    seeds = cfg.study.seeds
    finetune = [c for c in cells.values() if c.strategy.name == "finetune" and c.strategy.weights == "source"]
    plan = Plan(cfg.study.name, runs, n_trials, seeds, cfg.study.workers,
                pretrain_needed=bool(finetune) and find_pretrained(finetune[0]) is None,
                adaptive=cfg.study if cfg.study.adaptive else None)
    shapes = {}
    for key, cell in cells.items():
        recipes, sampled = _costs(cell)
        trials = recipes[:n_trials] + [None] * max(0, n_trials - len(recipes))
        shapes[key] = (trials, sampled, recipes or sampled)
    batches = sorted({c.batch for trials, sampled, rr in shapes.values() for c in [*sampled, *rr] if c is not None})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            probe = next(iter(cells.values()))
            plan.timings = {b: _time_batch(probe, b, Path(tmp)) for b in batches}
    finally:
        torch.set_num_threads(threads)

    def cost(c: RunCost) -> tuple[float, float]:
        t = plan.timings[c.batch]
        return t.fixed_s + c.steps * t.step_s, c.steps * t.flops_per_step

    def mean_cost(options: list[RunCost]) -> tuple[float, float]:
        both = [cost(c) for c in options]
        return statistics.fmean(s for s, _ in both), statistics.fmean(f for _, f in both)

    total_s = 0.0
    for (s, n, k), (trials, sampled, rerun_shapes) in shapes.items():
        row = plan.per_size.setdefault(n, {"runs": 0, "trainings": 0, "flops": 0.0, "seconds": 0.0})
        parts = [cost(t) if t is not None else mean_cost(sampled) for t in trials]
        rerun = mean_cost(rerun_shapes)
        parts += [rerun] * seeds
        row["runs"] += 1
        row["trainings"] += len(parts)
        row["seconds"] += sum(p[0] for p in parts)
        row["flops"] += sum(p[1] for p in parts)
        total_s += sum(p[0] for p in parts)
        plan.flops += sum(p[1] for p in parts)
        plan.trainings += len(parts)
    if plan.pretrain_needed:
        pre = finetune[0].pretrain.train
        t = plan.timings.get(int(pre.batch_size))
        if t is None:
            with tempfile.TemporaryDirectory() as tmp:
                t = _time_batch(finetune[0], int(pre.batch_size), Path(tmp))
        plan.pretrain_s = t.fixed_s + int(pre.steps) * t.step_s
    plan.seconds = total_s / max(1, plan.workers) + plan.pretrain_s
    return plan
