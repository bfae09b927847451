"""Shared fixtures: real configs composed from conf/ with small sizes, a session-wide pretraining
cache, and a guard that lets no test reach anything but the loopback interface.

Everything runs on the CPU with one torch thread (trainer.threads=1, the default), offline.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Callable

# Before anything imports wandb or huggingface_hub.
os.environ["WANDB_MODE"] = "disabled"
os.environ["HF_HUB_OFFLINE"] = "1"
# Anything W&B would send (even offline, a background thread may look its server up) stays on loopback.
os.environ["WANDB_BASE_URL"] = "http://127.0.0.1:9"
os.environ.pop("HARNESS_CACHE", None)
os.environ.pop("HYDRA_FULL_ERROR", None)

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from harness.cli import CONFIG_DIR  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Small enough that one run takes well under a second on one CPU thread.
SMALL = (
    "train.steps=10",
    "train.val_every=5",
    "train.batch_size=16",
    "data.n_train=20",
    "data.n_val=50",
    "data.n_test=50",
    "data.source_n_val=50",
    "logger=none",
    "trainer.accelerator=cpu",
    "trainer.threads=1",
    "pretrain.train.steps=20",
    "pretrain.train.val_every=10",
    "pretrain.train.batch_size=32",
)


def compose_cfg(*overrides: str, config_name: str = "train", small: bool = True, cache_dir: Path | None = None,
                typed: bool = True):
    """A real config from conf/ as the console scripts would see it (later overrides win):
    with typed=True, the checked settings its entry point builds (harness.settings.config.load), else the
    composed DictConfig."""
    base = list(SMALL) if small else []
    if cache_dir is not None:
        base.append(f"pretrain.cache_dir={cache_dir}")
    if config_name == "pretrain":
        base = [o for o in base if not o.startswith("train.")]  # harness-pretrain has no train group
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        composed = compose(config_name=config_name, overrides=base + list(overrides))
    return load_settings(composed, config_name) if typed else composed


def load_settings(composed: DictConfig, config_name: str):
    """What the entry point named `config_name` builds from its composed config."""
    from harness.settings.config import load
    from harness.settings.schema import CellConfig, ReportAppConfig, RunConfig, StudyAppConfig
    return load({"train": RunConfig, "pretrain": RunConfig, "tune": CellConfig, "study": StudyAppConfig,
                 "report": ReportAppConfig}[config_name], composed)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One pretraining cache for the whole session: each source config is pretrained once."""
    return tmp_path_factory.mktemp("pretrained")


@pytest.fixture(scope="session")
def make_cfg(cache_dir) -> Callable[..., object]:
    """make_cfg("strategy=finetune", "data.n_train=40") -> a composed, small config."""

    def make(*overrides: str, config_name: str = "train", cache: Path | None = None, typed: bool = True):
        return compose_cfg(*overrides, config_name=config_name, cache_dir=cache or cache_dir, typed=typed)

    return make


# --------------------------------------------------------------------------- network guard
def _loopback(host) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch):
    """Any attempt to resolve or connect to a non-loopback host fails the test that made it."""
    attempts: list[str] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(address) -> None:
        if isinstance(address, tuple) and not _loopback(address[0]):
            attempts.append(str(address))
            raise OSError(f"test network guard: {address} is not a loopback address")

    def connect(self, address):
        check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _loopback(host):
            attempts.append(str(host))
            raise socket.gaierror(f"test network guard: {host} is not a loopback host")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    assert not attempts, f"a test tried to reach a non-loopback host: {attempts}"


IMAGE_CLASSES = ("ant", "bee", "cat", "dog", "eel", "fox")
IMAGE_COLOURS = ((230, 30, 30), (30, 230, 30), (30, 30, 230), (230, 230, 30), (30, 230, 230), (230, 30, 230))
# Overrides that fit data=imagefolder to image_tree.
IMAGE_SIZES = ("data.image_size=12", "data.n_val=8", "data.n_test=8", "data.source_n_val=4")


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory) -> Path:
    """6 class folders x 12 PNGs of 12x12 pixels; each class has its own colour plus noise."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, colour in zip(IMAGE_CLASSES, IMAGE_COLOURS):
        (root / name).mkdir()
        for i in range(12):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


# --------------------------------------------------------------------------- order
def pytest_collection_modifyitems(config, items) -> None:
    """Files with slow end-to-end tests first, each file's tests kept together and in order: with the
    files spread over processes (`-n 2 --dist loadfile`), the longest ones start at once instead of last."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow_files)
