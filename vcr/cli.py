"""What every command line of the project shares: ``--set key=value`` overrides, the device, and
seed ranges. One definition each; ``workflow_scripts/`` and the trainer import them from here.

Imports nothing heavy at module level (``classifier_metric.py`` runs without torch).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from vcr.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


# --------------------------------------------------------------------------------------------
# --set key=value


def add_set_argument(parser, help: str = "overrides, parsed as YAML values") -> None:
    """``--set k=v [k=v ...]``, repeatable (``--set a=1 --set b=2`` works too)."""
    parser.add_argument(
        "--set", dest="sets", nargs="*", action="extend", default=[], metavar="KEY=VALUE", help=help
    )


def parse_sets(items) -> dict[str, Any]:
    """``["epochs=3", "lambda_grid=simclr", "milestones=[1, 2]"]`` -> ``{"epochs": 3, ...}``:
    values parsed as YAML scalars or flow lists; an empty value is the empty string."""
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: cannot parse the value: {err}") from None
    return out


def coerce(key: str, value: Any, like: Any, hint: Any = None) -> Any:
    """``value`` in the type of ``like`` (a field's default), or of the type ``hint`` where the
    default is None (``float | None``, ``tuple[int, ...] | None``). Strings are parsed as YAML
    first, so a command-line text and a config value give the same result."""
    if isinstance(value, str) and not isinstance(like, str):
        import yaml

        try:
            value = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"{key}: cannot parse {value!r}: {err}") from None
    optional = like is None or type(None) in typing.get_args(hint)
    if optional and (value is None or value in ("None", "null", "none")):
        return None
    if like is None:
        like = _example_of(hint)
        if like is None:
            return value
    try:
        return _coerce_like(value, like)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: value {value!r} does not fit {type(like).__name__}") from None


def _coerce_like(value, like):
    if isinstance(like, bool):
        if not isinstance(value, bool):
            raise TypeError
        return value
    if isinstance(like, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        return value
    if isinstance(like, float):
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    if isinstance(like, tuple):
        if isinstance(value, int | float | str):
            value = [value]
        return tuple(type(like[0])(v) if like else v for v in value)
    if isinstance(like, dict):
        if not isinstance(value, dict):
            raise TypeError
        return value
    if isinstance(like, str):
        return "" if value is None else str(value)
    return value


def _example_of(hint):
    """A value of the non-None type in ``X | None`` (for fields whose default is None)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) != 1:
        return None
    origin = typing.get_origin(args[0]) or args[0]
    if origin is tuple:
        inner = [a for a in typing.get_args(args[0]) if a is not Ellipsis]
        return (inner[0](),) if inner and inner[0] in (int, float, str) else ()
    return origin() if origin in (int, float, str, bool) else None


def with_overrides(config, overrides: dict | None, *, where: str):
    """A copy of the dataclass ``config`` with ``overrides`` coerced to its fields' types; an
    unknown key raises ``ConfigError`` naming it, ``where`` and the known keys."""
    if not overrides:
        return config
    fields = {f.name: f for f in dataclasses.fields(config) if f.init}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(fields)}")
    hints = typing.get_type_hints(type(config))
    typed = {
        k: coerce(f"{where}: {k}", v, getattr(config, k), hints.get(k))
        for k, v in overrides.items()
    }
    return dataclasses.replace(config, **typed)


# --------------------------------------------------------------------------------------------
# threads and device


def add_compute_arguments(parser, *, device: bool = True) -> None:
    """``--threads N`` (intra-op threads; default: torch's) and ``--device auto|cpu|cuda``."""
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    if device:
        add_device_argument(parser)


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def add_run_evaluation_arguments(parser, *, set_help: str) -> None:
    """What every evaluation of a pretrained run takes: the run folder, the feature cache,
    ``--set`` and the compute arguments."""
    parser.add_argument(
        "--run", required=True, help="pretraining run folder (run.json, backbone.pt)"
    )
    parser.add_argument("--feature-cache", default=None, help="default: RUN_DIR/features")
    add_set_argument(parser, help=set_help)
    add_compute_arguments(parser)


def add_device_argument(parser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="auto = cuda when a GPU is visible, else cpu; cuda fails when none is",
    )


def resolve_device(name=None):
    """``None``/``"auto"`` -> cuda when visible, else cpu; ``"cuda"`` without a usable GPU
    raises ``ConfigError`` naming why (a run that asked for a GPU never trains on the CPU by
    accident; the rules always pass ``--device cuda`` or ``cpu``)."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no usable CUDA device. {cuda_diagnosis()}")
    return device


# The oldest Linux driver each CUDA major release runs on (NVIDIA's minor-version
# compatibility table); a wheel built for a newer CUDA than the driver supports sees no GPU.
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}


def cuda_diagnosis() -> str:
    """Why torch sees no GPU: the wheel's CUDA and the driver it needs, the node's driver
    (nvidia-smi), CUDA_VISIBLE_DEVICES and torch's own error, in one line."""
    import os
    import shutil
    import subprocess

    import torch

    built = torch.version.cuda
    if built is None:
        wheel = f"torch {torch.__version__} is a CPU-only build (no CUDA at all)"
    else:
        need = MIN_DRIVER.get(int(built.split(".")[0]))
        wheel = f"torch {torch.__version__} is built for CUDA {built}" + (
            f" (needs an NVIDIA driver >= {need})" if need else ""
        )
    driver = "no nvidia-smi on PATH (no NVIDIA driver installed?)"
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=5, check=False,
            )  # fmt: skip
            driver = f"nvidia-smi: {(out.stdout or out.stderr).strip() or 'no output'}"
        except (OSError, subprocess.TimeoutExpired) as err:
            driver = f"nvidia-smi failed: {err}"
    reason = ""
    if built is not None:
        try:
            torch.cuda.init()
        except Exception as err:  # torch's own words: "driver too old (found version ...)"
            reason = f"; torch says: {str(err).strip().splitlines()[0]}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (
        f"{wheel}; this node: {driver}; CUDA_VISIBLE_DEVICES={visible!r}{reason}. Install a "
        "torch wheel built for this driver's CUDA (download.pytorch.org/whl/cu1XX) or update the "
        "driver; the job does not fall back to the CPU."
    )


# --------------------------------------------------------------------------------------------
# seeds


def parse_seeds(spec) -> list[int]:
    """``"0-9"`` -> 0..9; ``"0,3,5"``; ``"0-2,7"``; ``4``; ``[0, 1]`` (config lists)."""
    if isinstance(spec, list | tuple):
        return [int(s) for s in spec]
    out: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        elif part:
            out.append(int(part))
    if not out:
        raise ConfigError(f"seeds {spec!r}: no seeds")
    return out
