"""Target and source tasks: load a dataset, split its classes (source/target), hold out fixed test
and validation splits, and draw nested, stratified training subsets.

`data.subset` picks one of several training orders of the same training pool: subset 0 is the one
tuning uses; replicate r of a cell's best re-runs on subset r (harness/tuning/replicates.py), so that its
spread includes the draw of the training data, while validation and test stay fixed.

Small datasets become tensors on the training device and are batched without worker processes;
large ones are served by a DataLoader. Augmentation is applied to whole batches in the training
step (see `augment.py`), so both paths share it.

Pools hold the images as loaded; each task standardises them with per-channel statistics of its own
training pool (the examples its training subsets are drawn from), never of its validation or test
images, so nothing about the held-out splits leaks into training.

Pools are read and standardised in harness/data/pools.py; what the source task learns from (the dataset's
source classes or printed glyphs) is chosen in harness/data/sources.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from harness.errors import ConfigError
from harness.data.pools import IDENTITY, LabelledImages, Standardise, _Pool, load_pool
from harness.settings.schema import DataConfig
from harness.data.sources import glyph_pool


@dataclass
class Task:
    """One classification task with its fixed splits; labels are 0..num_classes-1."""

    train: LabelledImages
    val: LabelledImages
    test: LabelledImages
    class_names: list[str]
    in_chans: int
    image_size: int
    test_split: str = ""  # digest of the test examples (target role): re-runs on one test set pair up
    norm: Standardise = IDENTITY  # the training pool's statistics every split was standardised with

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ------------------------------------------------------------------------------------- splitting
def _resolve_classes(spec: Sequence | None, names: list[str], what: str) -> list[int] | None:
    """Classes may be given as indices or as class names (an image folder's sub-folders)."""
    if spec is None:
        return None
    out = []
    for c in spec:
        if isinstance(c, int) and 0 <= c < len(names):
            out.append(c)
        elif str(c) in names:
            out.append(names.index(str(c)))
        else:
            raise ConfigError(f"data.{what} names class {c!r}, which the dataset does not have: choose from {names}")
    return out


def split_classes(cfg: DataConfig, names: list[str]) -> tuple[list[int] | None, list[int]]:
    """Disjoint source and target classes (Yosinski et al. 2014)."""
    source = _resolve_classes(cfg.source_classes, names, "source_classes")
    target = _resolve_classes(cfg.target_classes, names, "target_classes")
    if target is None:
        target = [c for c in range(len(names)) if c not in set(source or [])]
    if source is not None and set(source) & set(target):
        raise ConfigError(f"data.source_classes and data.target_classes overlap on {sorted(set(source) & set(target))}: make them disjoint")
    if len(target) < 2:
        raise ConfigError("the target task has fewer than 2 classes: widen data.target_classes")
    return source, target


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """An ordering of `labels`' positions whose every prefix is (near) stratified.

    One example of each class first, then all others by rank-within-class / class-size: a prefix of
    length n is therefore the n-subset for every n, so subsets are nested by construction.
    """
    rng = np.random.default_rng(seed)
    firsts, rest, keys = [], [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        firsts.append(idx[0])
        for r, i in enumerate(idx[1:], start=1):
            rest.append(i)
            keys.append((r + 0.5) / len(idx) + 1e-9 * c)
    firsts_arr = np.array(firsts)[rng.permutation(len(firsts))]
    return np.concatenate([firsts_arr, np.array(rest, dtype=np.int64)[np.argsort(keys, kind="stable")]]).astype(np.int64)


def _check_size(what: str, n: int, available: int, num_classes: int, key: str) -> None:
    if n > available:
        raise ConfigError(f"{key}={n} but only {available} examples are available for the {what}: lower {key} (at most {available})")
    if n < num_classes:
        raise ConfigError(f"{key}={n} is smaller than the {num_classes} classes of the {what}: use at least {num_classes}")


def subset_seed(split_seed: int, subset: int) -> int:
    """The seed of training order `subset` > 0: a 64-bit seed drawn from (split_seed, subset), so the
    order is neither subset 0's (seed split_seed + 2) nor any other subset's or split_seed's."""
    return int(np.random.SeedSequence([split_seed, subset]).generate_state(1, dtype=np.uint64)[0])


def draw_seed(split_seed: int, draw: int, subset: int | None = None) -> int:
    """The seed of validation draw `draw` > 0 (subset None) or of its training order `subset`:
    64 bits from (split_seed, draw, subset), so no two draws or orders share one."""
    parts = [split_seed, 1_000_003, draw] + ([] if subset is None else [subset])
    return int(np.random.SeedSequence(parts).generate_state(1, dtype=np.uint64)[0])


def split_digest(cfg: DataConfig, class_names: list[str], test_idx: np.ndarray, official: bool) -> str:
    """A short name for the test examples: which dataset, which target classes, which images in
    which order. Runs with equal digests were scored on the same examples, position by position."""
    text = json.dumps({"data": cfg.name, "dataset": cfg.dataset, "classes": list(class_names),
                       "official_test": official, "test": [int(i) for i in test_idx]}, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _glyph_task(cfg: DataConfig, target: _Pool) -> Task:
    """The glyph source task: a stratified validation split of data.glyphs.n_val, the rest trains."""
    pool = glyph_pool(cfg, target)
    settings = cfg.glyphs
    k = len(pool.class_names)
    order = stratified_order(pool.labels, settings.seed + 7919)
    val, train = order[:settings.n_val], order[settings.n_val:]
    label_map = {c: c for c in range(k)}
    norm = pool.statistics(np.sort(train))
    empty = LabelledImages(y=torch.zeros(0, dtype=torch.long), x=pool.x[:0])
    return Task(pool.take(train, label_map, norm), pool.take(val, label_map, norm), empty, pool.class_names,
                pool.in_chans, pool.image_size, norm=norm)


def build_task(cfg: DataConfig, role: str = "target", pool: _Pool | None = None) -> Task:
    """The target task (train/val/test) or the source task (train/val, no test): the dataset's
    source classes, or rendered glyphs shaped like the target (data.source=glyphs)."""
    pool = pool or load_pool(cfg)
    if role == "source" and cfg.source == "glyphs":
        return _glyph_task(cfg, pool)
    source, target = split_classes(cfg, pool.class_names)
    seed = cfg.split_seed
    if role == "source":
        if not source:
            raise ConfigError("pretraining needs source classes: set data.source_classes (e.g. [0,1,2,3,4]), pretrain on printed glyphs (data.source=glyphs), or use finetune weights from a file or the hub")
        classes = source
    else:
        classes = target
    label_map = {c: i for i, c in enumerate(classes)}
    names = [pool.class_names[c] for c in classes]
    members = np.flatnonzero(np.isin(pool.labels, classes))
    order = members[stratified_order(pool.labels[members], seed + (0 if role == "target" else 7919))]
    k = len(classes)

    if role == "source":
        n_val = cfg.source_n_val
        _check_size("source task's validation split", n_val, len(order) - k, k, "data.source_n_val")
        val, train = order[:n_val], order[n_val:]
        norm = pool.statistics(train)  # the source task's own training part
        empty = LabelledImages(y=torch.zeros(0, dtype=torch.long), x=pool.x[:0] if pool.x is not None else None)
        return Task(pool.take(train, label_map, norm), pool.take(val, label_map, norm), empty, names, pool.in_chans,
                    pool.image_size, norm=norm)

    n_test, n_val, n_train = cfg.n_test, cfg.n_val, cfg.n_train
    if pool.test is not None:
        test_members = np.flatnonzero(np.isin(pool.test.labels, classes))
        test_order = test_members[stratified_order(pool.test.labels[test_members], seed)]
        _check_size("test split", n_test, len(test_order), k, "data.n_test")
        test_idx, test_pool, rest = test_order[:n_test], pool.test, order
    else:
        _check_size("test split", n_test, len(order) - 2 * k, k, "data.n_test")
        test_idx, test_pool, rest = order[:n_test], pool, order[n_test:]
    # Re-stratify what is left so validation and training prefixes both stay balanced. Draw d > 0 (a
    # tuning run of its own, harness/tuning/replicates.py) draws its own validation split from what the
    # test split leaves; draw 0 is the split every study before tuning runs used.
    draw = cfg.draw
    rest = rest[stratified_order(pool.labels[rest], seed + 1 if draw == 0 else draw_seed(seed, draw))]
    _check_size("validation split", n_val, len(rest) - k, k, "data.n_val")
    val_idx = rest[:n_val]
    # Every subset orders the same training pool (what validation and test left), so val/test never move;
    # subset 0 keeps the order tuning has always used. Its statistics standardise every split.
    subset = cfg.subset
    train_pool = rest[n_val:]
    norm = pool.statistics(np.sort(train_pool))
    order_seed = (seed + 2 if subset == 0 else subset_seed(seed, subset)) if draw == 0 else draw_seed(seed, draw, subset)
    train_pool = train_pool[stratified_order(pool.labels[train_pool], order_seed)]
    _check_size("training set", n_train, len(train_pool), k, "data.n_train")
    train_idx = train_pool[:n_train]
    folds = cfg.cv_folds
    if folds:  # cross-validation inside n_train: the validation split is never read
        train_idx, val_idx = cross_validation_fold(train_idx, pool.labels, folds, cfg.cv_fold)
    train = pool.take(train_idx, label_map, norm)
    val = pool.take(val_idx, label_map, norm)
    test = test_pool.take(test_idx, label_map, norm)
    digest = split_digest(cfg, names, test_idx, pool.test is not None)
    return Task(train, val, test, names, pool.in_chans, pool.image_size, test_split=digest, norm=norm)


def cross_validation_fold(train_idx: np.ndarray, labels: np.ndarray, folds: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices of fold `fold` of `folds` stratified folds of `train_idx`: each
    class's examples, in their order, go to folds round-robin. fold=-1: all of them train, none is
    held out (a re-run after cross-validated selection)."""
    if fold < 0:
        return train_idx, train_idx[:0]
    rank = np.zeros(len(train_idx), dtype=np.int64)
    for c in np.unique(labels[train_idx]):
        members = np.flatnonzero(labels[train_idx] == c)
        rank[members] = np.arange(members.size)
    held = rank % folds == fold
    return train_idx[~held], train_idx[held]


def unvalidated(cfg: DataConfig) -> DataConfig:
    """`cfg` with every n_train example training and no split read for validation: what checks and
    fold counting use under cross-validated selection, which must not touch the validation split."""
    return dataclasses.replace(cfg, cv_folds=max(2, cfg.cv_folds), cv_fold=-1)


def cv_folds_for(cfg: DataConfig, most: int) -> int:
    """k = min(most, smallest class count in the n_train examples): every fold holds out each class."""
    task = build_task(unvalidated(cfg), "target")
    smallest = int(np.bincount(task.train.y.numpy(), minlength=task.num_classes).min())
    return min(int(most), smallest)


# -------------------------------------------------------------------------------------- batching
class TensorBatches:
    """Endless shuffled batches from tensors already on the device: no workers, no collation."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int):
        self.x, self.y = x, y
        self.batch_size = min(batch_size, len(y))
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        while True:
            perm = torch.randperm(n, generator=self.generator).to(self.x.device)
            for start in range(0, n - self.batch_size + 1, self.batch_size):
                idx = perm[start:start + self.batch_size]
                yield self.x[idx], self.y[idx]


class _Selected(Dataset):
    """The chosen examples of a lazy dataset, with labels already mapped to 0..K-1."""

    def __init__(self, images: LabelledImages):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images.dataset[int(self.images.indices[i])][0], self.images.y[i]


def _endless(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def train_batches(images: LabelledImages, batch_size: int, seed: int, device: torch.device,
                  num_workers: int):
    if images.in_memory:
        return TensorBatches(images.x.to(device), images.y.to(device), batch_size, seed)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(_Selected(images), batch_size=min(batch_size, len(images)), shuffle=True, drop_last=True,
                        num_workers=num_workers, generator=generator, pin_memory=device.type == "cuda",
                        persistent_workers=num_workers > 0)
    return _endless(loader)


class FixedBatches:
    """Pre-sliced evaluation batches on the device (one iterable, not a list of loaders)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int):
        self.batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def eval_batches(images: LabelledImages, batch_size: int, device: torch.device, num_workers: int) -> FixedBatches | DataLoader:
    """Sequential batches; in-memory data is pre-sliced once on the device."""
    if images.in_memory:
        return FixedBatches(images.x.to(device), images.y.to(device), batch_size)
    return DataLoader(_Selected(images), batch_size=batch_size, shuffle=False, num_workers=num_workers)


def one_batch(images: LabelledImages, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A real batch for counting FLOPs."""
    n = min(batch_size, len(images))
    if images.in_memory:
        return images.x[:n], images.y[:n]
    xs = [images.dataset[int(i)][0] for i in images.indices[:n]]
    return torch.stack(xs), images.y[:n]
