"""Tasks and splits: nested stratified subsets, fixed test/val splits, disjoint source and target
classes, image folders, and data sizes that cannot work."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import IMAGE_CLASSES, IMAGE_SIZES

from harness.data.task import build_task
from harness.errors import ConfigError
from harness.data.pools import load_pool
from harness.training.pretrain import ensure_source
from harness.training.run import run_training


def _indexed_pool(data_cfg):
    """The real pool, with each image replaced by its own index (and not standardised): splits then
    show which examples they hold."""
    pool = load_pool(data_cfg)
    n = len(pool.labels)
    indexed = dataclasses.replace(pool, x=torch.arange(n, dtype=torch.float64).view(n, 1, 1, 1), standardise=False)
    return indexed, pool.labels


def _ids(images) -> list[int]:
    return [int(v) for v in images.x.flatten().tolist()]


N_TRAINS = (5, 12, 23, 40, 97, 200)


@pytest.fixture(scope="module")
def tasks(make_cfg):
    cfg = make_cfg("data.n_val=60", "data.n_test=70")
    pool, labels = _indexed_pool(cfg.data)
    out = {}
    for n in N_TRAINS:
        c = make_cfg("data.n_val=60", "data.n_test=70", f"data.n_train={n}")
        out[n] = build_task(c.data, pool=pool)
    return out, labels


def test_training_subsets_are_nested(tasks):
    by_n, _ = tasks
    for small, large in zip(N_TRAINS, N_TRAINS[1:]):
        a, b = _ids(by_n[small].train), _ids(by_n[large].train)
        assert len(a) == small and len(b) == large
        assert set(a) < set(b), f"n_train={small} is not inside n_train={large}"
        assert b[:small] == a  # the same prefix, so also the same order


def test_training_subsets_are_stratified(tasks, make_cfg):
    by_n, labels = tasks
    # Class shares of the whole training pool (digits' classes differ a little in size: 174..183 images).
    available = int(np.isin(labels, [5, 6, 7, 8, 9]).sum()) - 60 - 70
    full = build_task(make_cfg("data.n_val=60", "data.n_test=70", f"data.n_train={available}").data,
                      pool=_indexed_pool(make_cfg().data)[0])
    share = np.bincount(full.train.y.numpy(), minlength=5) / available
    with pytest.raises(ConfigError, match="only"):
        build_task(make_cfg("data.n_val=60", "data.n_test=70", f"data.n_train={available + 1}").data)
    for n, task in by_n.items():
        counts = np.bincount(task.train.y.numpy(), minlength=5)
        assert counts.min() >= 1, f"n_train={n} misses a class: {counts}"
        assert np.abs(counts - n * share).max() <= 1.0, f"n_train={n}: {counts} vs {n * share}"
        assert np.abs(counts - n / 5).max() <= 1.5, f"n_train={n} is not balanced: {counts}"
        # the mapped labels are the original classes 5..9, in order
        original = labels[_ids(task.train)]
        assert np.array_equal(original, np.array([5, 6, 7, 8, 9])[task.train.y.numpy()])


def test_val_and_test_are_fixed_and_disjoint_from_train(tasks):
    by_n, _ = tasks
    first = by_n[N_TRAINS[0]]
    for task in by_n.values():
        train, val, test = set(_ids(task.train)), set(_ids(task.val)), set(_ids(task.test))
        assert len(val) == 60 and len(test) == 70
        assert not train & val and not train & test and not val & test
        assert _ids(task.test) == _ids(first.test)
        assert _ids(task.val) == _ids(first.val)
        for split in (task.val, task.test):
            counts = Counter(split.y.tolist())
            assert max(counts.values()) - min(counts.values()) <= 1


def test_split_seed_changes_the_subsets(make_cfg):
    a_cfg, b_cfg = make_cfg("data.n_train=40"), make_cfg("data.n_train=40", "data.split_seed=1")
    pool, _ = _indexed_pool(a_cfg.data)
    a, b = build_task(a_cfg.data, pool=pool), build_task(b_cfg.data, pool=pool)
    again = build_task(a_cfg.data, pool=pool)
    assert _ids(a.train) == _ids(again.train) and _ids(a.test) == _ids(again.test)
    assert set(_ids(a.train)) != set(_ids(b.train))
    assert set(_ids(a.test)) != set(_ids(b.test))


# ------------------------------------------------------------------ training subsets (data.subset)
# Replicate r of a cell's best trains on subset r (harness/tuning/replicates.py); subset 0 is tuning's.
SUBSETS = (0, 1, 2)


def _split(make_cfg, pool, *overrides):
    return build_task(make_cfg("data.n_val=60", "data.n_test=70", *overrides).data, pool=pool)


@pytest.fixture(scope="module")
def subset_tasks(make_cfg):
    pool, labels = _indexed_pool(make_cfg().data)
    return {(k, n): _split(make_cfg, pool, f"data.n_train={n}", f"data.subset={k}") for k in SUBSETS for n in N_TRAINS}, pool, labels


def test_subset_0_is_the_training_order_tuning_has_always_used(make_cfg):
    """Committed results and every trial so far trained on these images: subset 0 must not move them."""
    pool, _ = _indexed_pool(make_cfg().data)
    pinned = [1274, 1019, 321, 1583, 37, 1713, 104, 395, 995, 1794, 893, 711]
    assert _ids(_split(make_cfg, pool, "data.n_train=12").train) == pinned
    assert _ids(_split(make_cfg, pool, "data.n_train=12", "data.subset=0").train) == pinned


def test_other_subsets_are_other_nested_stratified_draws_of_the_same_pool(subset_tasks, make_cfg):
    by_kn, pool, labels = subset_tasks
    for k in SUBSETS[1:]:
        for small, large in zip(N_TRAINS, N_TRAINS[1:]):
            a, b = _ids(by_kn[k, small].train), _ids(by_kn[k, large].train)
            assert len(a) == small and b[:small] == a, f"subset {k}: n_train={small} is not a prefix of {large}"
        for n in N_TRAINS:
            ids = _ids(by_kn[k, n].train)
            assert set(ids) != set(_ids(by_kn[0, n].train)), f"subset {k} repeats subset 0 at n_train={n}"
            assert set(ids) != set(_ids(by_kn[3 - k, n].train)), f"subsets 1 and 2 agree at n_train={n}"
            counts = np.bincount(by_kn[k, n].train.y.numpy(), minlength=5)
            assert counts.min() >= 1 and np.abs(counts - n / 5).max() <= 1.5, f"subset {k}, n_train={n}: {counts}"
    # All of the training pool, in another order: the same images, so the subsets draw from one pool.
    available = int(np.isin(labels, [5, 6, 7, 8, 9]).sum()) - 60 - 70
    full = [_ids(_split(make_cfg, pool, f"data.n_train={available}", f"data.subset={k}").train) for k in SUBSETS]
    assert all(set(f) == set(full[0]) for f in full) and full[1] != full[0] and full[2] != full[1]


def test_validation_test_and_their_digest_are_the_same_for_every_subset_and_size(subset_tasks):
    by_kn, _, _ = subset_tasks
    first = by_kn[0, N_TRAINS[0]]
    assert len(first.test_split) == 16 and int(first.test_split, 16) >= 0  # a short hex digest
    for (k, n), task in by_kn.items():
        assert _ids(task.val) == _ids(first.val) and _ids(task.test) == _ids(first.test), (k, n)
        assert task.test_split == first.test_split, (k, n)
        train = set(_ids(task.train))
        assert not train & set(_ids(task.val)) and not train & set(_ids(task.test))


def test_the_test_split_digest_names_the_test_examples(make_cfg):
    pool, _ = _indexed_pool(make_cfg().data)
    digest = _split(make_cfg, pool, "data.n_train=20").test_split
    assert _split(make_cfg, pool, "data.n_train=20", "data.n_val=61").test_split == digest  # test examples unchanged
    for other in ("data.split_seed=1", "data.n_test=71", "data.target_classes=[5,6,7,8]"):
        assert _split(make_cfg, pool, "data.n_train=20", other).test_split != digest, other
    assert build_task(make_cfg().data, role="source", pool=pool).test_split == ""


@pytest.mark.parametrize("value", ["-1", "1.5", "true", "abc"])
def test_a_bad_subset_is_a_one_line_config_error_exit_2(make_cfg, tmp_path, value, capsys):
    from harness.errors import EXIT_BAD_INPUT, exits_cleanly

    with pytest.raises(ConfigError, match=rf"(?i)data\.subset={re.escape(value)} must be an integer >= 0") as err:
        run_training(make_cfg(f"data.subset={value}"), tmp_path / "run")
    assert "\n" not in str(err.value)
    with pytest.raises(SystemExit) as exit_:
        exits_cleanly(lambda: run_training(make_cfg(f"data.subset={value}"), tmp_path / "run"))()
    assert exit_.value.code == EXIT_BAD_INPUT
    assert capsys.readouterr().err.startswith("error: data.subset=")
    assert not (tmp_path / "run").exists()  # refused before any run folder


def test_source_and_target_classes_are_disjoint(make_cfg):
    cfg = make_cfg("data.source_classes=[0,2,4]", "data.target_classes=null", "data.n_train=30")
    pool, labels = _indexed_pool(cfg.data)
    source = build_task(cfg.data, role="source", pool=pool)
    target = build_task(cfg.data, pool=pool)
    assert source.class_names == ["0", "2", "4"]
    assert target.class_names == ["1", "3", "5", "6", "7", "8", "9"]
    source_ids = _ids(source.train) + _ids(source.val)
    target_ids = _ids(target.train) + _ids(target.val) + _ids(target.test)
    assert set(labels[source_ids]) == {0, 2, 4}
    assert set(labels[target_ids]) == {1, 3, 5, 6, 7, 8, 9}
    assert len(source.test) == 0
    assert len(source.train) + len(source.val) == int(np.isin(labels, [0, 2, 4]).sum())  # every source image used


def test_overlapping_classes_are_refused(make_cfg):
    cfg = make_cfg("data.source_classes=[0,1,2]", "data.target_classes=[2,3,4]")
    with pytest.raises(ConfigError, match="overlap") as err:
        build_task(cfg.data)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("data.n_train=5000", "only"),
    ("data.n_train=3", "smaller than the 5 classes"),
    ("data.n_test=5000", "data.n_test"),
])
def test_impossible_sizes_are_config_errors(make_cfg, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message) as err:
        run_training(make_cfg(override), tmp_path)
    assert "\n" not in str(err.value)


def test_missing_imagefolder_root(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="not a folder") as err:
        run_training(make_cfg("data=imagefolder", f"data.root={tmp_path / 'nope'}"), tmp_path / "run")
    assert "\n" not in str(err.value)


def test_imagefolder_root_must_be_set(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        run_training(make_cfg("data=imagefolder"), tmp_path)


# --------------------------------------------------------------------------------- image folders
# image_tree (conftest.py): one folder per name in IMAGE_CLASSES, 12 PNGs of 12x12 pixels each.


def test_imagefolder_task_sizes(make_cfg, image_tree):
    cfg = make_cfg("data=imagefolder", f"data.root={image_tree}", *IMAGE_SIZES, "data.n_train=24")
    task = build_task(cfg.data)
    assert task.class_names == list(IMAGE_CLASSES)
    assert task.in_chans == 3 and task.image_size == 12
    assert task.train.x.shape == (24, 3, 12, 12)
    assert (len(task.train), len(task.val), len(task.test)) == (24, 8, 8)
    assert Counter(task.train.y.tolist()) == {c: 4 for c in range(6)}


def test_imagefolder_trains_scratch(make_cfg, image_tree, tmp_path):
    cfg = make_cfg("data=imagefolder", f"data.root={image_tree}", *IMAGE_SIZES, "data.n_train=24", "train.steps=15")
    result = run_training(cfg, tmp_path)
    assert result.n_train == 24 and result.class_names == list(IMAGE_CLASSES)
    assert result.model.get_classifier().out_features == 6
    assert result.compute.steps == 15 and result.compute.train_flops > 0
    assert 0.0 <= result.val_acc <= 1.0 and result.test_acc is not None
    assert result.val_acc > 1 / 6  # colours are easy: 15 steps beat chance


def test_imagefolder_source_target_split_by_name(make_cfg, image_tree, tmp_path):
    cfg = make_cfg("data=imagefolder", f"data.root={image_tree}", *IMAGE_SIZES,
                   "data.source_classes=[ant,bee]", "data.n_train=12", "strategy=finetune")
    source = build_task(cfg.data, role="source")
    assert source.class_names == ["ant", "bee"] and len(source.train) + len(source.val) == 24
    ensure_source(cfg)
    result = run_training(cfg, tmp_path)
    assert result.class_names == ["cat", "dog", "eel", "fox"]
    assert result.n_train == 12 and result.model.get_classifier().out_features == 4
    assert result.test_acc is not None


def test_imagefolder_unknown_class_name(make_cfg, image_tree):
    cfg = make_cfg("data=imagefolder", f"data.root={image_tree}", *IMAGE_SIZES, "data.source_classes=[ant,yak]")
    with pytest.raises(ConfigError, match="yak"):
        build_task(cfg.data)


def test_a_dataset_is_read_once_per_process(make_cfg, monkeypatch):
    """Every trial of a cell builds its task; the images are read from disk once."""
    import harness.data.task as data
    import harness.data.pools as pools

    calls = []
    real = pools._LOADERS["digits"]
    monkeypatch.setitem(pools._LOADERS, "digits", lambda cfg: calls.append(1) or real(cfg))
    monkeypatch.setattr(pools, "_pools", {})
    a = data.build_task(make_cfg("data.n_train=20").data)
    b = data.build_task(make_cfg("data.n_train=40").data)
    assert len(calls) == 1
    assert torch.equal(a.test.x, b.test.x) and set(map(tuple, a.train.x.flatten(1).tolist())) <= set(
        map(tuple, b.train.x.flatten(1).tolist()))


# ------------------------------------------------------------------ normalisation: training pool only
# Statistics come from the examples training subsets are drawn from; changing only held-out images
# (a constant added to their pixels) must leave the training data exactly as it was.


def test_tensor_normalisation_ignores_validation_and_test_images(make_cfg, monkeypatch):
    import sklearn.datasets

    import harness.data.pools as data

    cfg = make_cfg("data.n_train=40")
    held = build_task(cfg.data, pool=_indexed_pool(cfg.data)[0])
    source_held = build_task(cfg.data, role="source", pool=_indexed_pool(cfg.data)[0])
    monkeypatch.setattr(data, "_pools", {})
    before, source_before = build_task(cfg.data), build_task(cfg.data, role="source")
    real = sklearn.datasets.load_digits

    def shifted(*args, **kwargs):
        bunch = real(*args, **kwargs)
        bunch.images = bunch.images.copy()
        bunch.images[_ids(held.test)] += 7.0  # pixel values 0..16: a large shift
        bunch.images[_ids(held.val)] += 3.0
        bunch.images[_ids(source_held.val)] += 5.0
        return bunch

    monkeypatch.setattr(sklearn.datasets, "load_digits", shifted)
    monkeypatch.setattr(data, "_pools", {})
    after, source_after = build_task(cfg.data), build_task(cfg.data, role="source")

    assert torch.equal(after.train.x, before.train.x)
    assert torch.equal(after.norm.mean, before.norm.mean) and torch.equal(after.norm.std, before.norm.std)
    assert torch.allclose(after.test.x - before.test.x, (7.0 / 16) / before.norm.std, atol=1e-5)  # only they moved
    assert torch.allclose(after.val.x - before.val.x, (3.0 / 16) / before.norm.std, atol=1e-5)
    # The source task: its own training part, not its validation split
    assert torch.equal(source_after.train.x, source_before.train.x)
    assert not torch.equal(source_after.val.x, source_before.val.x)
    # ...and not the target task's images either: the two tasks standardise with their own statistics
    assert not torch.equal(source_before.norm.mean, before.norm.mean)


def test_lazy_dataset_normalisation_ignores_validation_and_test_images(make_cfg, image_tree, tmp_path):
    import shutil

    from PIL import Image
    from torchvision.datasets import ImageFolder

    from harness.data.task import one_batch

    def task(root):
        return build_task(make_cfg("data=imagefolder", f"data.root={root}", *IMAGE_SIZES, "data.n_train=24",
                                   "data.on_device_max_mb=0").data)

    before = task(image_tree)
    assert not before.train.in_memory  # the DataLoader path
    changed = tmp_path / "changed"
    shutil.copytree(image_tree, changed)
    files = ImageFolder(str(changed)).samples
    for i in [*before.test.indices, *before.val.indices]:
        path = Path(files[int(i)][0])
        pixels = np.asarray(Image.open(path), dtype=np.int16) + 40
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    after = task(changed)

    assert list(after.train.indices) == list(before.train.indices)
    assert torch.equal(one_batch(after.train, 24)[0], one_batch(before.train, 24)[0])
    assert torch.equal(after.norm.mean, before.norm.mean) and torch.equal(after.norm.std, before.norm.std)
    assert not torch.equal(one_batch(after.test, 8)[0], one_batch(before.test, 8)[0])


# ------------------------------------------------------------------------ the glyph source (data.source)
GLYPHS = ("data.source=glyphs", "data.glyphs.n=520", "data.glyphs.n_val=104")


def test_the_glyph_source_task_is_rendered_characters_shaped_like_the_target(make_cfg):
    task = build_task(make_cfg(*GLYPHS).data, role="source")
    assert task.class_names == list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    assert (len(task.train), len(task.val), len(task.test)) == (416, 104, 0)
    assert Counter(task.val.y.tolist()) == {c: 2 for c in range(52)}
    assert task.in_chans == 1 and task.image_size == 8 and task.train.x.shape[1:] == (1, 8, 8)
    # standardised like the digits: with the glyph task's own training statistics
    assert abs(float(task.train.x.mean())) < 1e-4 and abs(float(task.train.x.std()) - 1) < 1e-2
    assert abs(float(task.val.x.mean())) < 0.05
    # the same rendering whatever the target's split: the target's settings do not move the source
    again = build_task(make_cfg(*GLYPHS, "data.split_seed=3", "data.target_classes=[1,2]").data, role="source")
    assert torch.equal(again.train.x, task.train.x) and torch.equal(again.val.y, task.val.y)


def test_glyphs_take_the_targets_size_and_channels_unless_told(make_cfg, image_tree):
    assert build_task(make_cfg(*GLYPHS, "data.image_size=16").data, role="source").train.x.shape[1:] == (1, 16, 16)
    told = build_task(make_cfg(*GLYPHS, "data.image_size=16", "data.glyphs.image_size=12").data, role="source")
    assert told.image_size == 12 and told.train.x.shape[1:] == (1, 12, 12)
    rgb = build_task(make_cfg("data=imagefolder", f"data.root={image_tree}", *IMAGE_SIZES, *GLYPHS).data, role="source")
    assert rgb.in_chans == 3 and rgb.train.x.shape[1:] == (3, 12, 12)
    assert torch.equal(rgb.train.x[:, 0], rgb.train.x[:, 2])  # grey, in every channel


def test_with_glyphs_the_target_may_take_every_class(make_cfg):
    cfg = make_cfg(*GLYPHS, "data.source_classes=null", "data.target_classes=null", "data.n_train=30")
    assert build_task(cfg.data).class_names == [str(c) for c in range(10)]
    assert len(build_task(cfg.data, role="source").class_names) == 52  # no source classes needed
    with pytest.raises(ConfigError, match="data.source=glyphs"):  # the classes source needs some: the fix is named
        build_task(make_cfg("data.source_classes=null", "data.target_classes=null").data, role="source")


def test_a_fine_tune_from_glyphs_pretrains_on_them_then_trains_all_ten_digits(make_cfg, tmp_path):
    from harness.training.pretrain import ensure_pretrained

    cfg = make_cfg(*GLYPHS, "data.source_classes=null", "data.target_classes=null", "strategy=finetune",
                   cache=tmp_path / "cache")
    ensure_source(cfg)
    result = run_training(cfg, tmp_path / "run")
    assert result.class_names == [str(c) for c in range(10)] and result.model.get_classifier().out_features == 10
    meta = ensure_pretrained(cfg).meta
    assert meta["source"] == "glyphs" and "".join(meta["source_classes"]) == cfg.data.glyphs.chars
    assert meta["n_source_train"] == 416 and "DejaVuSans.ttf" in meta["source_fonts"]


@pytest.mark.parametrize("override, message", [
    ("data.source=letters", r"data\.source=letters is not one of classes, glyphs"),
    ("data.glyphs.stroke=[3,1]", r"data\.glyphs\.stroke=\[3, 1\] must be"),
    ("data.glyphs.n_val=19990", r"data\.glyphs\.n_val=19990 must lie between the 52 characters and n - 52"),
    ("+data.glyphs.colour=red", r"data\.glyphs\.colour is not a glyph setting"),
])
def test_a_bad_source_setting_is_a_one_line_config_error_exit_2(make_cfg, tmp_path, override, message, capsys):
    from harness.errors import EXIT_BAD_INPUT, exits_cleanly

    from harness.settings.config import load
    from harness.settings.schema import RunConfig

    cfg = make_cfg("data.source=glyphs", override, "strategy=finetune", cache=tmp_path / "cache", typed=False)
    with pytest.raises(ConfigError, match=message) as err:
        run_training(load(RunConfig, cfg), tmp_path / "run")
    assert "\n" not in str(err.value)
    with pytest.raises(SystemExit) as exit_:
        exits_cleanly(lambda: run_training(load(RunConfig, cfg), tmp_path / "run"))()
    assert exit_.value.code == EXIT_BAD_INPUT and capsys.readouterr().err.startswith("error: data.")
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_characters_no_font_draws_are_refused_before_a_pretraining_folder(make_cfg, tmp_path):
    from harness.training.pretrain import ensure_pretrained

    cfg = make_cfg("data.source=glyphs", "data.glyphs.chars='AB\u4e00'", "strategy=finetune", cache=tmp_path / "cache")
    with pytest.raises(ConfigError, match="lacks real glyphs"):
        ensure_pretrained(cfg)
    assert not (tmp_path / "cache").exists()


def test_the_pool_key_changes_with_any_data_setting_not_declared_independent():
    """The pool is keyed by every data setting but POOL_INDEPENDENT: a setting added to DataConfig
    (a column name, a revision) changes the key without anyone listing it."""
    import dataclasses

    from harness.data.pools import POOL_INDEPENDENT, pool_key
    from harness.settings.schema import DataConfig

    base = DataConfig()
    assert POOL_INDEPENDENT <= {f.name for f in dataclasses.fields(DataConfig)}  # no stale names
    for name in POOL_INDEPENDENT - {"glyphs"}:
        other = dataclasses.replace(base, **{name: 7 if name != "augment" else "off"})
        assert pool_key(other) == pool_key(base), name
    assert pool_key(dataclasses.replace(base, root="/elsewhere")) != pool_key(base)
    WithRevision = dataclasses.make_dataclass("WithRevision", [("revision", str, "v1")], bases=(DataConfig,), frozen=True)
    assert pool_key(WithRevision(revision="v1")) != pool_key(WithRevision(revision="v2"))
