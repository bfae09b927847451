"""Fused members (harness/training/fused.py): K re-runs of one configuration trained as one stacked
model must be the K runs trained apart, member by member, and nothing may couple them."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy import stats
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from harness.store.records import decode_correct
from harness.training.fused import NotFusable, fuse, member, train_members
from harness.training.models import TinyCNN
from harness.training.run import run_training
from harness.tuning.replicates import replicate


def _swap_norms(model: nn.Module, make) -> None:
    """Every BatchNorm2d of `model` replaced by make(num_features)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.BatchNorm2d):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, make(module.num_features))


class _Plain(TinyCNN):
    """TinyCNN without BatchNorm: the case where a fused member must equal its own run exactly."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        _swap_norms(self, lambda c: nn.Identity())


class _GroupNormed(TinyCNN):
    """A norm over groups of channels: no exact stacked form."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        _swap_norms(self, lambda c: nn.GroupNorm(4, c))


class _Shuffled(TinyCNN):
    """Every layer stacks, but the forward reverses the channel order in code."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).flip(1)


_CFG = dict(url="", num_classes=10, input_size=(1, 8, 8), mean=(0.0,), std=(1.0,), first_conv="stem.0", classifier="fc")
default_cfgs = generate_default_cfgs({"fused_test_plain_cnn": dict(_CFG), "fused_test_groupnorm_cnn": dict(_CFG)})


@register_model
def fused_test_plain_cnn(pretrained: bool = False, **kwargs):
    return build_model_with_cfg(_Plain, "fused_test_plain_cnn", pretrained, **kwargs)


@register_model
def fused_test_groupnorm_cnn(pretrained: bool = False, **kwargs):
    return build_model_with_cfg(_GroupNormed, "fused_test_groupnorm_cnn", pretrained, **kwargs)


def _replicates(cfg, k: int = 3) -> list:
    """What harness/tuning/rerun.py trains: replicate r's seed and training subset."""
    return [replicate(cfg, r) for r in range(1, k + 1)]


def _max_weight_difference(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


@pytest.mark.parametrize("model", ["fused_test_plain_cnn", "harness_tiny_cnn"])
def test_a_fused_member_is_its_separate_run(make_cfg, tmp_path, model) -> None:
    """Without BatchNorm (and, with augmentation off, with it too) each member's curve, test
    correctness, FLOPs and weights are its separate run's, within float tolerance."""
    cfgs = _replicates(make_cfg(f"model.name={model}", "train.steps=15", "data.augment=off"))
    apart = [run_training(c, tmp_path / f"apart{i}") for i, c in enumerate(cfgs)]
    together = train_members(cfgs, [tmp_path / f"member{i}" for i in range(len(cfgs))])
    assert len(together) == len(cfgs)
    for a, b in zip(apart, together):
        assert [s for s, _ in a.val_history] == [s for s, _ in b.val_history] == [5, 10, 15]
        assert a.val_history == b.val_history
        assert np.array_equal(a.test_correct, b.test_correct) and a.test_acc == b.test_acc
        assert a.test_split == b.test_split and a.n_train == b.n_train
        assert a.compute.train_flops == b.compute.train_flops and a.compute.eval_flops == b.compute.eval_flops
        assert a.compute.steps == b.compute.steps
        assert _max_weight_difference(a.model, b.model) < 1e-4
    # the members really are different runs (own seed and subset)
    assert _max_weight_difference(together[0].model, together[1].model) > 1e-2


def test_fused_replicates_are_distributed_as_separate_ones(make_cfg, tmp_path) -> None:
    """With BatchNorm and strong augmentation (whose random draws differ between the two ways), the
    members' accuracies are indistinguishable from separate runs' over seeds."""
    fused, apart = [], []
    for block in range(3):
        cfgs = _replicates(make_cfg("train.steps=30", "data.augment=strong", f"seed={100 * block}"), k=4)
        fused += [r.test_acc for r in train_members(cfgs, [tmp_path / f"f{block}-{i}" for i in range(4)])]
        apart += [run_training(c, tmp_path / f"a{block}-{i}").test_acc for i, c in enumerate(cfgs)]
    assert len(set(fused)) > 3  # really different runs
    assert stats.mannwhitneyu(fused, apart).pvalue > 0.05
    assert abs(np.mean(fused) - np.mean(apart)) < 0.05


def _models(cls, k: int = 3) -> list[nn.Module]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(cls(num_classes=5, in_chans=1).eval())
    return out


def test_the_stacked_model_gives_each_member_its_own_logits_and_can_be_cut_apart() -> None:
    models = _models(TinyCNN)
    body = fuse(models, torch.randn(2, 1, 8, 8)).eval()
    xs = [torch.randn(4, 1, 8, 8) for _ in models]
    with torch.no_grad():
        out = body(torch.cat(xs, 1)).view(4, len(models), -1)
        for k, (m, x) in enumerate(zip(models, xs)):
            assert torch.allclose(out[:, k], m(x), atol=1e-5)
            assert _max_weight_difference(member(body, m, k, len(models)), m) == 0.0


def test_a_diverged_member_leaves_the_others_untouched() -> None:
    """NaN weights in member 1: members 0 and 2 keep their own finite logits and gradients."""
    models = _models(TinyCNN)
    body = fuse(models, torch.randn(2, 1, 8, 8)).train()
    with torch.no_grad():
        body.stem[0].weight.view(3, -1)[1] = float("nan")
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8, 3))
    logits = body(x).view(8, 3, -1)
    assert torch.isnan(logits[:, 1]).all() and torch.isfinite(logits[:, [0, 2]]).all()
    losses = torch.nn.functional.cross_entropy(logits.permute(0, 2, 1), y, reduction="none").mean(0)
    torch.where(torch.tensor([True, False, True]), losses, torch.zeros_like(losses)).sum().backward()
    for p in body.parameters():
        if p.grad is not None and p.grad.shape[0] % 3 == 0 and p.ndim > 0:
            parts = p.grad.reshape(3, -1)
            assert torch.isfinite(parts[[0, 2]]).all()


@pytest.mark.parametrize("cls, why", [(_GroupNormed, "GroupNorm at `stem.1` has no exact stacked form"),
                                      (_Shuffled, "mixes channels outside its layers")])
def test_a_model_that_cannot_be_stacked_is_refused(cls, why) -> None:
    with pytest.raises(NotFusable, match=why):
        fuse(_models(cls), torch.randn(2, 1, 8, 8))


def test_the_reruns_of_an_unstackable_model_train_one_at_a_time_and_say_so(tmp_path, caplog) -> None:
    from harness.tuning.tune import tune_cell
    from tuning_helpers import compose_tune, load

    cfg = compose_tune(tmp_path, "model.name=fused_test_groupnorm_cnn", "tune.n_trials=2")
    with caplog.at_level(logging.INFO, logger="harness.tuning.rerun"):
        tune_cell(cfg, tmp_path / "runs")
    assert "the 2 re-runs train one at a time: GroupNorm at `stem.1` has no exact stacked form" in caplog.text
    final = load(tmp_path).user_attrs["final"]
    assert [r["status"] for r in final] == ["ok", "ok"] and [r["replicate"] for r in final] == [1, 2]


def test_fused_and_separate_reruns_store_the_same_records(tmp_path) -> None:
    """trainer.fuse changes how the re-runs train, not what the cell stores (augmentation off)."""
    from harness.tuning.tune import tune_cell
    from tuning_helpers import compose_tune, load, set_space

    stored = {}
    for fuse_flag in ("true", "false"):
        where = tmp_path / fuse_flag
        cfg = compose_tune(where, f"trainer.fuse={fuse_flag}", "tune.n_trials=2", "data.augment=off")
        tune_cell(set_space(cfg, {"lr": {"key": "train.lr", "type": "float", "low": 0.002, "high": 0.004}}), where / "runs")
        stored[fuse_flag] = load(where).user_attrs["final"]
    keep = ("replicate", "seed", "subset", "status", "flops", "n_test", "test_split")
    assert [{k: r.get(k) for k in keep} for r in stored["true"]] == [{k: r.get(k) for k in keep} for r in stored["false"]]
    # the accuracies agree up to float noise amplified over the steps (one kernel for K members, another for one)
    for a, b in zip(stored["true"], stored["false"]):
        assert abs(a["test_acc"] - b["test_acc"]) <= 0.02 and abs(a["val_acc"] - b["val_acc"]) <= 0.06
        same = np.mean(decode_correct(a) == decode_correct(b))
        assert same >= 0.95


def test_when_every_member_diverges_the_group_stops_and_each_is_recorded_diverged(make_cfg, tmp_path) -> None:
    """No joint error to fall back on (which would train every member again alone): each member
    comes back as a RunFailed caused by TrainingDiverged, with what it spent until then."""
    from harness.training.module import TrainingDiverged
    from harness.training.run import RunFailed

    cfgs = _replicates(make_cfg("train.lr=1e30", "train.warmup_frac=0", "train.steps=20", "data.augment=off"))
    out = train_members(cfgs, [tmp_path / f"member{i}" for i in range(len(cfgs))])
    assert all(isinstance(r, RunFailed) and isinstance(r.__cause__, TrainingDiverged) for r in out)
    assert all(0 < r.compute.steps < 20 and r.compute.train_flops > 0 for r in out)


# ------------------------------------------------------------------ recipe trials of K tuning runs (harness/tuning/together.py)


class _StopAt(__import__("pytorch_lightning").Callback):
    """What a pruner does to a trial trained alone: stop it at the validation of `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_validation_end(self, trainer, pl_module) -> None:
        if pl_module.val_history and pl_module.val_history[-1][0] >= self.step:
            trainer.should_stop = True


def test_a_member_its_judge_stops_ends_there_as_its_own_run_would_and_the_test_split_stays_unread(
        make_cfg, tmp_path, monkeypatch) -> None:
    """Members of two tuning runs (own seed and validation draw); the second's judge stops it at step
    5: its curve, FLOPs and steps are those of its run trained alone and stopped there; the first goes
    on as its own run. Without evaluate_test no test example is read."""
    import dataclasses

    import harness.training.fused as fused

    base = make_cfg("model.name=fused_test_plain_cnn", "train.steps=15", "data.augment=off")
    cfgs = [dataclasses.replace(base, seed=base.seed + 1000 * k, data=dataclasses.replace(base.data, draw=k))
            for k in range(2)]
    alone = [run_training(cfgs[0], tmp_path / "a0", evaluate_test=False),
             run_training(cfgs[1], tmp_path / "a1", evaluate_test=False, callbacks=[_StopAt(5)])]
    real = fused._stacked_eval
    monkeypatch.setattr(fused, "_stacked_eval", lambda tasks, split, *a: real(tasks, split, *a) if split != "test"
                        else pytest.fail("a trial read the test split"))
    asked = []
    together = train_members(cfgs, [tmp_path / "m0", tmp_path / "m1"], evaluate_test=False, log_kind="trial",
                             judges=[None, lambda module, step, acc: asked.append(step) or step >= 5])
    assert asked == [5]  # asked at its validations until it stopped
    assert alone[1].stopped_early and together[1].stopped_early and not together[0].stopped_early
    for a, b in zip(alone, together):
        assert a.val_history == b.val_history
        assert (a.compute.train_flops, a.compute.eval_flops, a.compute.steps) == (b.compute.train_flops, b.compute.eval_flops,
                                                                                  b.compute.steps)
        assert b.test_acc is None and b.test_correct is None
    assert together[1].compute.steps == 5 and together[0].compute.steps == 15


def test_members_may_differ_in_draw_and_tuning_run_but_not_in_what_they_train(make_cfg) -> None:
    import dataclasses

    from harness.training.fused import check_members
    from harness.tuning.replicates import tuning_run
    from tuning_helpers import compose_tune

    cell = compose_tune(__import__("pathlib").Path("/tmp/unused"))
    check_members([tuning_run(cell, k) for k in range(3)])
    other = dataclasses.replace(cell, train=dataclasses.replace(cell.train, lr=cell.train.lr * 2))
    with pytest.raises(NotFusable, match="differ beyond their seed, data subset, data draw and tuning run"):
        check_members([cell, other])


def _two_runs(where, *overrides):
    """Tuning runs 0 and 1 of a tiny cell whose two recipes differ in lr only (augmentation off)."""
    from harness.tuning.replicates import tuning_run
    from tuning_helpers import compose_tune, set_space

    cfg = compose_tune(where, "tune.n_trials=2", "data.augment=off", *overrides)
    cfg = set_space(cfg, {"lr": {"key": "train.lr", "type": "float", "low": 0.002, "high": 0.004}},
                    recipes={"low": {"lr": 0.002}, "high": {"lr": 0.004}})
    return [tuning_run(cfg, k) for k in range(2)]


def _trials(where) -> dict[str, list]:
    import optuna

    from tuning_helpers import storage_url

    url = storage_url(where)
    return {name: optuna.load_study(study_name=name, storage=url).trials for name in sorted(optuna.get_all_study_names(url))}


def test_the_recipe_trials_of_a_cells_tuning_runs_train_together_and_store_what_alone_would(tmp_path) -> None:
    """tune_recipes_together with trainer.fuse true and false (then a no-op, each run tuned alone):
    each run's trials carry the same recipes, states, FLOPs and steps; values agree up to float noise."""
    from harness.tuning.together import tune_recipes_together
    from harness.tuning.tune import tune_cell

    stored = {}
    for flag in ("true", "false"):
        runs = _two_runs(tmp_path / flag, f"trainer.fuse={flag}")
        roots = [tmp_path / flag / f"run{k}" for k in range(2)]
        fused = tune_recipes_together(runs, roots)
        assert fused == (2 if flag == "true" else 0)
        for run, root in zip(runs, roots):
            tune_cell(run, root, rerun=False)  # nothing left but what alone would do
        stored[flag] = _trials(tmp_path / flag)
    assert list(stored["true"]) == ["digits/n000010/scratch/t0", "digits/n000010/scratch/t1"]
    keep = ("recipe_name", "flops", "train_flops", "eval_flops", "steps")
    for name in stored["true"]:
        together, alone = stored["true"][name], stored["false"][name]
        assert [t.state for t in together] == [t.state for t in alone]
        assert [{k: t.user_attrs.get(k) for k in keep} for t in together] == [{k: t.user_attrs.get(k) for k in keep} for t in alone]
        assert [sorted(t.intermediate_values) for t in together] == [sorted(t.intermediate_values) for t in alone]
        for a, b in zip(together, alone):
            assert abs(a.value - b.value) <= 0.06
    first, second = stored["true"].values()
    assert [t.value for t in first] != [t.value for t in second]  # own seeds and validation draws
    assert [t.user_attrs["members"] for t in first + second] == [2] * 4
    assert all("members" not in t.user_attrs for trials in stored["false"].values() for t in trials)


def test_a_pruned_member_is_its_own_runs_pruned_trial_and_the_others_go_on(tmp_path, monkeypatch) -> None:
    from harness.tuning import pruning
    from harness.tuning.together import tune_recipes_together
    from optuna.trial import TrialState

    judge = pruning.PruningCallback.judge

    def prune_run_1(self, module, step, acc):  # run 1's pruner rejects its trials at step 10
        return judge(self, module, step, acc) or (self.trial.study.study_name.endswith("/t1") and step >= 10)

    monkeypatch.setattr(pruning.PruningCallback, "judge", prune_run_1)
    runs = _two_runs(tmp_path)
    assert tune_recipes_together(runs, [tmp_path / "r0", tmp_path / "r1"]) == 2
    first, second = _trials(tmp_path).values()
    assert [t.state for t in first] == [TrialState.COMPLETE] * 2
    assert [t.state for t in second] == [TrialState.PRUNED] * 2
    assert all(max(t.intermediate_values) == 10 and t.user_attrs["steps"] == 10 for t in second)
    assert all(t.user_attrs["steps"] == 20 and t.user_attrs["flops"] > second[0].user_attrs["flops"] for t in first)


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_interrupted_recipe_trials_taken_together_are_requeued_as_recipes_and_resume_together(tmp_path, monkeypatch, stop) -> None:
    """Ctrl-C, or a scheduler's SIGTERM, in the middle of a group."""
    import os
    import signal

    import harness.tuning.together as together
    from optuna.trial import TrialState

    runs = _two_runs(tmp_path)
    roots = [tmp_path / "r0", tmp_path / "r1"]

    def ctrl_c(*args, **kwargs):
        if stop == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(together, "train_members", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            together.tune_recipes_together(runs, roots)
    for trials in _trials(tmp_path).values():
        assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING, TrialState.WAITING]
        assert trials[0].user_attrs["interrupted"] and trials[2].user_attrs == {"retry_of": 0, "recipe": True, "recipe_name": "low"}
    assert together.tune_recipes_together(runs, roots) == 2  # the resume: both recipes, together again
    for trials in _trials(tmp_path).values():
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        assert sorted(t.user_attrs["recipe_name"] for t in done) == ["high", "low"]
