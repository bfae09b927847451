"""Where pretrained weights come from, read safely and checked against the model before use.

Files load only from safetensors or through `torch.load(weights_only=True)`: a pickle that would run
code is refused. A file that does not fit the model is an error a person can act on, not a silent
partial load (timm's loader goes non-strict once it drops the old head).
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from harness.errors import ConfigError
from harness.settings.schema import RunConfig
from harness.training.source_cache import cache_dir, find_pretrained

HUB_PROBE_TIMEOUT_S = 3.0
_CHECKPOINT_KEYS = ("state_dict", "model", "module", "model_state_dict")


@dataclass(frozen=True)
class InitialWeights:
    """What a run's model starts from, decided by its caller before training: timm's random
    initialisation (neither set), the hub's weights, or a weights file."""
    file: Path | None = None
    hub: bool = False


def resolve_weights(cfg: RunConfig) -> InitialWeights:
    """Where strategy.weights points: harness-pretrain's cache (read, never made here: the entry
    points make it first, see harness.training.pretrain.ensure_source), a file, or the hub (checked reachable)."""
    if cfg.strategy.name == "scratch":
        return InitialWeights()
    weights = cfg.strategy.weights
    if weights == "source":
        found = find_pretrained(cfg)
        if found is None:
            raise ConfigError(f"strategy.weights=source but no source model is cached in {cache_dir(cfg)}: run harness-pretrain "
                              "with the same overrides first (harness-train, -tune and -study make it themselves)")
        return InitialWeights(file=found.weights)
    if weights == "hub":
        require_hub(cfg.model.name)
        return InitialWeights(hub=True)
    return InitialWeights(file=Path(weights).expanduser())


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or torch weights file; never unpickles code."""
    if not path.is_file():
        raise ConfigError(f"weights file {path} does not exist: pass an existing .safetensors or .pt file as strategy.weights")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ConfigError(f"weights file {path} is not a readable safetensors file ({_first_line(err)}): re-export it with safetensors.torch.save_file") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        if "unsupported global" in str(err).lower() or "Unsupported class" in str(err):  # not every weights_only failure is code
            raise ConfigError(f"weights file {path} holds pickled code, which is refused for safety: save only tensors (model.state_dict()) or use safetensors") from None
        reason = str(err).split("WeightsUnpickler error:")[-1]  # torch's advice to unpickle unsafely is no reason
        raise ConfigError(f"weights file {path} is not a readable torch weights file ({_first_line(reason)}): save it with torch.save(model.state_dict(), path) or use safetensors") from None
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _CHECKPOINT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"weights file {path} does not hold a state dict of tensors: save model.state_dict()")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def check_fits(state: dict[str, torch.Tensor], model: nn.Module, head: set[str], first_conv: str | None, path: Path) -> None:
    """Every backbone tensor must be in the file with its shape (the head is replaced anyway; the
    first conv may differ in input channels, which timm adapts)."""
    expected = {k: v.shape for k, v in model.state_dict().items() if k not in head and not k.endswith("num_batches_tracked")}
    given = {k: v.shape for k, v in state.items() if k not in head and not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = [k for k in set(expected) & set(given) if expected[k] != given[k]
             and not (first_conv and k == f"{first_conv}.weight" and expected[k][0] == given[k][0] and expected[k][2:] == given[k][2:])]
    if missing or unexpected or wrong:
        detail = "; ".join(part for part in (
            f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
            f"{len(wrong)} of the wrong shape (e.g. {sorted(wrong)[0]}: {tuple(given[sorted(wrong)[0]])} vs {tuple(expected[sorted(wrong)[0]])})" if wrong else "",
        ) if part)
        raise ConfigError(f"weights file {path} does not fit model {type(model).__name__}: {detail}: use weights saved from the same model.name")


def require_hub(model_name: str) -> None:
    """Fail in seconds, not after a minute of retries, when the hub cannot be reached."""
    alternatives = "use strategy.weights=source (pretrain offline with harness-pretrain) or strategy.weights=/path/to/weights.safetensors"
    if "." not in model_name:
        raise ConfigError(f"strategy.weights=hub needs a tagged model.name such as resnet18.a1_in1k (got {model_name}): add a tag or {alternatives}")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        if _in_hub_cache(model_name):
            return
        raise ConfigError(f"hub weights for {model_name} requested but HF_HUB_OFFLINE is set and they are not cached: {alternatives}")
    endpoint = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        if _in_hub_cache(model_name):
            return
        raise ConfigError(f"cannot reach the model hub at {endpoint.geturl()} for {model_name} weights: {alternatives}") from None


def _in_hub_cache(model_name: str) -> bool:
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(model_name)
        repo = cfg.hf_hub_id if cfg else None
        return bool(repo) and isinstance(try_to_load_from_cache(repo.split(":")[0], "model.safetensors"), str)
    except Exception:
        return False


def _first_line(err: BaseException | str) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
