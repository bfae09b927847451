"""Datasets read once per process into pools of images (digits, an image folder, torchvision), which
tasks (harness/data/task.py) cut into splits and standardise without changing.

Small datasets become tensors (on the training device later) and are batched without worker
processes; large ones stay lazy datasets served by a DataLoader. Pools hold the images as loaded; a
task standardises them with per-channel statistics of its own training pool (`_Pool.statistics`).
"""

from __future__ import annotations

import dataclasses

import difflib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from harness.errors import ConfigError
from harness.data.image_files import ReadableImages
from harness.settings.schema import DataConfig


@dataclass
class LabelledImages:
    """Either tensors (x: N,C,H,W float; y: N long) or a dataset with indices into it."""

    y: torch.Tensor
    x: torch.Tensor | None = None
    dataset: Dataset | None = None
    indices: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def in_memory(self) -> bool:
        return self.x is not None


@dataclass(frozen=True)
class Standardise:
    """Per-channel mean and std (C, 1, 1) of a task's training pool, applied to all its splits."""

    mean: torch.Tensor
    std: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


IDENTITY = Standardise(torch.zeros(1, 1, 1), torch.ones(1, 1, 1))

PROBE = 256  # images of a lazily loaded training pool its statistics are estimated from


@dataclass
class _Pool:
    """All images of a dataset before splitting, as loaded (tensors when small, else a lazy dataset)."""

    labels: np.ndarray
    class_names: list[str]
    in_chans: int
    image_size: int
    x: torch.Tensor | None = None
    dataset: Dataset | None = None
    test: "_Pool | None" = None  # an official test split, when the dataset has one
    standardise: bool = True  # False: images as given (tests that read example ids from pixels)
    stats: dict[str, Standardise] = field(default_factory=dict, init=False, repr=False, compare=False)

    def take(self, idx: np.ndarray, label_map: dict[int, int], norm: Standardise = IDENTITY) -> LabelledImages:
        y = torch.tensor([label_map[int(c)] for c in self.labels[idx]], dtype=torch.long)
        if self.x is not None:
            return LabelledImages(y=y, x=norm(self.x[torch.as_tensor(idx, dtype=torch.long)]))
        return LabelledImages(y=y, dataset=_Standardised(self.dataset, norm), indices=idx)

    def statistics(self, idx: np.ndarray) -> Standardise:
        """Per-channel mean/std of the examples `idx` (a training pool), computed once per pool."""
        if not self.standardise:
            return IDENTITY
        key = hashlib.sha1(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()
        if key not in self.stats:
            self.stats[key] = _statistics(self._images(idx))
        return self.stats[key]

    def _images(self, idx: np.ndarray) -> torch.Tensor:
        if self.x is not None:
            return self.x[torch.as_tensor(idx, dtype=torch.long)]
        probe = np.asarray(idx)[np.linspace(0, len(idx) - 1, min(PROBE, len(idx))).astype(int)]
        return torch.stack([self.dataset[int(i)][0] for i in probe])


def _statistics(x: torch.Tensor) -> Standardise:
    mean = x.mean(dim=(0, 2, 3))[:, None, None]
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)[:, None, None]
    return Standardise(mean, std)


# --------------------------------------------------------------------------------------- loading


def _load_digits(cfg: DataConfig) -> _Pool:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if cfg.image_size and cfg.image_size != 8:
        x = torch.nn.functional.interpolate(x, size=cfg.image_size, mode="bilinear", align_corners=False)
    return _Pool(
        labels=np.asarray(bunch.target, dtype=np.int64),
        class_names=[str(c) for c in range(10)],
        in_chans=1,
        image_size=int(x.shape[-1]),
        x=x,
    )


def _image_transform(image_size: int, in_chans: int):
    from torchvision import transforms

    steps = [transforms.Resize((image_size, image_size))]
    if in_chans == 1:
        steps.append(transforms.Grayscale(1))
    steps.append(transforms.ToTensor())
    return transforms.Compose(steps)


def _to_tensors(dataset: Dataset, limit_mb: float) -> torch.Tensor | None:
    """Materialise a dataset as one tensor when it fits the limit, else None (DataLoader path)."""
    first = dataset[0][0]
    size_mb = first.numel() * 4 * len(dataset) / 2**20
    if size_mb > limit_mb:
        return None
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


class _Standardised(Dataset):
    """A lazily loaded dataset with a task's statistics applied, as `_Pool.take` does for tensors."""

    def __init__(self, dataset: Dataset, norm: Standardise):
        self.dataset, self.norm = dataset, norm

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        return self.norm(x), y


def _finish_pool(dataset: Dataset, labels: np.ndarray, class_names: list[str], image_size: int,
                 in_chans: int, limit_mb: float) -> _Pool:
    """Tensors when the dataset fits `limit_mb`, else the dataset itself; standardised per task."""
    x = _to_tensors(dataset, limit_mb)
    if x is not None:
        return _Pool(labels, class_names, in_chans, image_size, x=x)
    return _Pool(labels, class_names, in_chans, image_size, dataset=dataset)


def _load_imagefolder(cfg: DataConfig) -> _Pool:
    from torchvision.datasets import ImageFolder

    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.root={root} is not a folder: point data.root at a folder with one sub-folder of images per class")
    size = int(cfg.image_size or 32)
    readable = ReadableImages()
    try:
        folder = ImageFolder(str(root), transform=_image_transform(size, 3), is_valid_file=readable)
    except (FileNotFoundError, RuntimeError) as err:
        raise ConfigError(f"data.root={root} holds no images in class sub-folders ({err}): lay it out as root/<class>/<image>") from None
    readable.settle(root, cfg.skip_bad_files)
    labels = np.asarray(folder.targets, dtype=np.int64)
    return _finish_pool(folder, labels, list(folder.classes), size, 3, cfg.on_device_max_mb)


def _load_torchvision(cfg: DataConfig) -> _Pool:
    import torchvision.datasets as tvd

    name = cfg.dataset
    cls = getattr(tvd, name, None)
    if cls is None or not isinstance(cls, type):
        close = difflib.get_close_matches(name, [n for n in dir(tvd) if n[:1].isupper()], n=3)
        raise ConfigError(f"data.dataset={name} is not a torchvision dataset: try one of {close or ['CIFAR10', 'CIFAR100', 'MNIST']}")
    root = Path(cfg.root).expanduser()
    probe_in_chans = 1 if name in {"MNIST", "FashionMNIST", "KMNIST", "EMNIST", "QMNIST"} else 3
    size = int(cfg.image_size or (28 if probe_in_chans == 1 else 32))
    transform = _image_transform(size, probe_in_chans)

    def make(train: bool):
        try:
            return cls(str(root), train=train, download=cfg.download, transform=transform)
        except RuntimeError as err:
            raise ConfigError(f"{name} not found under data.root={root} ({err}): set data.download=true on a networked machine or point data.root at a copy") from None

    pools = []
    for split in (True, False):
        ds = make(split)
        labels = np.asarray(getattr(ds, "targets", getattr(ds, "labels", None)), dtype=np.int64)
        names = [str(c) for c in getattr(ds, "classes", sorted(set(labels.tolist())))]
        pools.append(_finish_pool(ds, labels, names, size, probe_in_chans, cfg.on_device_max_mb))
    pools[0].test = pools[1]
    return pools[0]


_LOADERS = {"digits": _load_digits, "imagefolder": _load_imagefolder, "torchvision": _load_torchvision}


# The data settings that do not change the pool (the whole dataset as read): how it is cut into
# splits, subsets and classes afterwards, and how it is augmented or fed. Every other setting keys
# the pool, so a new one changes the key unless it is added here, on purpose (tests/test_data.py).
POOL_INDEPENDENT = frozenset({"n_train", "n_val", "n_test", "split_seed", "subset", "draw", "cv_folds", "cv_fold",
                              "source_classes", "target_classes", "source_n_val", "source", "glyphs", "augment",
                              "num_workers"})
_pools: dict[str, _Pool] = {}


def pool_key(cfg: DataConfig) -> str:
    """What identifies the pool a config reads: every data setting but POOL_INDEPENDENT."""
    return repr(sorted((f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name not in POOL_INDEPENDENT))


def load_pool(cfg: DataConfig) -> _Pool:
    """A dataset is read once per process: every trial of a cell (and every cell of a worker)
    shares it; splits and subsets are cut from it without changing it."""
    loader = _LOADERS.get(cfg.name)
    if loader is None:
        raise ConfigError(f"data.name={cfg.name} is unknown: use one of {sorted(_LOADERS)}")
    key = pool_key(cfg)
    if key not in _pools:
        _pools.clear()  # one dataset at a time: a worker moves between cells of one study
        _pools[key] = loader(cfg)
    return _pools[key]
