"""Probing one run: the protocol registry and ``evaluate_run`` (the CLI ``workflow_scripts/
probe.py`` calls it). One metric record per eval dataset."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vcr.cli import coerce, with_overrides
from vcr.errors import ConfigError
from vcr.names import PROBE_PROTOCOLS

SPLITS = ("train", "val", "test")

# Settings every protocol accepts through --set besides its own config keys.
COMMON_SETTINGS = {
    "target": "default",  # label set probed (Table 2: sub); the plan passes target=sub
    "extract_batch_size": 256,  # backbone batch size for feature extraction
    "extract_workers": -1,  # DataLoader workers for extraction; -1: CPUs - 1, at most 8
    "cache_dtype": "float32",  # feature cache dtype (float32 | float16)
    # shorter side before the centre crop at evaluation; -1: the protocol's (EVAL_RESIZE), 0:
    # the crop itself. Images below 64 px are always used at their native size.
    "eval_resize": -1,
    "fast_array_loader": True,  # in-memory arrays skip the DataLoader (false: workers too)
}
# "Resize 256, centre crop 224" where the protocol's source says so: the VISSL/VICReg
# Places205 and iNat18 linear probes and the SimCLR/VICReg 1% fine-tuning (PAPER_PROTOCOLS §5).
# The L-BFGS transfer probes resize to 224 (Kornblith et al. / SimCLR), as the AdamW probe.
EVAL_RESIZE = {"sgd": 256, "finetune": 256, "lbfgs": 0, "adamw": 0}


@dataclass
class ProbeTask:
    """One (run, eval dataset) a protocol measures."""

    features: Any  # vcr.features.RunFeatures of the run
    dataset: str
    manifest: str
    info: dict  # vcr.data.dataset_info(manifest, target)
    target: str
    device: Any
    eval_resize: int = 0  # shorter side before the eval crop (0: the crop; see COMMON_SETTINGS)

    def splits(self) -> list:
        """``[Xtr, ytr, Xval, yval, Xtest, ytest]``: cached frozen features of the three splits."""
        feats = {
            s: self.features.get(
                self.dataset,
                s,
                manifest=self.manifest,
                target=self.target,
                resize_size=self.eval_resize,
            )
            for s in SPLITS
        }
        return [t for s in SPLITS for t in feats[s]]


@dataclass(frozen=True)
class Protocol:
    """A registry entry: the ``--set`` keys (a config dataclass) and how to run it."""

    name: str
    config: type
    fit: Callable[[ProbeTask, Any], dict]  # (task, config) -> {"val", "test", ...}


def _on_features(fit_features, *, pass_dataset: bool = False):
    """A registry ``fit`` for a probe of cached features: ``fit_features(Xtr, ytr, Xval, yval,
    Xtest, ytest, *, metric, num_classes, device, config[, eval_dataset])``."""

    def fit(task: ProbeTask, cfg) -> dict:
        extra = {"eval_dataset": task.dataset} if pass_dataset else {}
        return fit_features(
            *task.splits(),
            metric=task.info["metric"],
            num_classes=task.info["num_classes"],
            device=task.device,
            config=cfg,
            **extra,
        )

    return fit


def _registry() -> dict[str, Protocol]:
    from vcr.probes.finetune import FinetuneConfig, finetune_on_dataset
    from vcr.probes.heads import AdamwConfig, SgdConfig, linear_probe_adamw, linear_probe_sgd
    from vcr.probes.lbfgs import LbfgsConfig, linear_probe_lbfgs

    entries = (
        Protocol("lbfgs", LbfgsConfig, _on_features(linear_probe_lbfgs)),
        # the SGD schedule depends on the dataset (iNat18 or Places205)
        Protocol("sgd", SgdConfig, _on_features(linear_probe_sgd, pass_dataset=True)),
        Protocol("adamw", AdamwConfig, _on_features(linear_probe_adamw)),
        Protocol("finetune", FinetuneConfig, finetune_on_dataset),
    )
    registry = {p.name: p for p in entries}
    if tuple(registry) != PROBE_PROTOCOLS:
        raise AssertionError(f"probe registry {tuple(registry)} != names.PROBE_PROTOCOLS")
    return registry


PROTOCOLS: dict[str, Protocol] = _registry()


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ConfigError(f"--protocol {name!r}: expected one of {list(PROTOCOLS)}")
    return PROTOCOLS[name]


def make_config(protocol: str, overrides: dict | None = None):
    """The protocol's config with ``--set`` overrides applied; unknown keys raise ConfigError."""
    cls = get_protocol(protocol).config
    return with_overrides(cls(), dict(overrides or {}), where=f"{protocol} probe")


def split_config(cfg_cls, sets: dict, *, common: dict) -> tuple[Any, dict]:
    """Split ``--set`` values into (protocol config, common settings); unknown keys raise
    ConfigError naming them and the accepted keys."""
    names = {f for f in cfg_cls.__dataclass_fields__}
    proto, com = {}, dict(common)
    for k, v in sets.items():
        if k in names:
            proto[k] = v
        elif k in common:
            com[k] = coerce(f"--set {k}", v, common[k])
        else:
            raise ConfigError(
                f"--set {k}: unknown key for {cfg_cls.__name__}; expected one of "
                f"{sorted(names) + sorted(common)}"
            )
    return with_overrides(cfg_cls(), proto, where=f"--set ({cfg_cls.__name__})"), com


def evaluate_run(
    run_dir,
    protocol: str,
    eval_datasets: list[str],
    manifests: list,
    *,
    feature_cache=None,
    sets: dict | None = None,
    device=None,
    log=print,
) -> list[dict]:
    """Probe one run's backbone on each eval dataset; one metric record per dataset.

    The run's parameters are ``RUN_DIR/run.json["params"]``; the backbone ``RUN_DIR/backbone.pt``.
    Everything cheap is checked (protocol, keys, files, manifests, label sets) before any
    feature is extracted.
    """
    from vcr import io
    from vcr.data import dataset_info
    from vcr.features import RunFeatures
    from vcr.records import RunSpec, make_record, run_strength

    run_dir = Path(run_dir)
    proto = get_protocol(protocol)
    if len(eval_datasets) != len(manifests):
        raise ConfigError(
            f"{len(eval_datasets)} --eval-dataset names but {len(manifests)} --manifest files: "
            "give one manifest per eval dataset, in the same order"
        )
    cfg, com = split_config(proto.config, dict(sets or {}), common=COMMON_SETTINGS)
    if com["eval_resize"] < 0:
        com["eval_resize"] = EVAL_RESIZE[protocol]
    run_json = run_dir / "run.json"
    if not run_json.is_file():
        raise FileNotFoundError(f"{run_json} is missing: is {run_dir} a finished pretraining run?")
    params = RunSpec.from_dict(io.read_json(run_json)["params"]).to_dict()
    final_json = run_dir / "final.json"
    strength = run_strength(io.read_json(final_json)) if final_json.is_file() else {}
    if not (run_dir / "backbone.pt").is_file():
        raise FileNotFoundError(
            f"{run_dir / 'backbone.pt'} is missing: the pretraining run has not finished "
            "(workflow_scripts/pretrain.py writes it last)"
        )
    target = com["target"]
    infos = []
    for name, m in zip(eval_datasets, manifests):
        if not Path(m).is_file():
            raise FileNotFoundError(
                f"manifest {m} for eval dataset {name!r} is missing: run workflow_scripts/"
                f"prepare_data.py --dataset {name} --out {Path(m).parent}"
            )
        infos.append(dataset_info(m, target))

    feats = RunFeatures.from_settings(run_dir, com, cache_dir=feature_cache, device=device)
    records = []
    for name, m, info in zip(eval_datasets, manifests, infos):
        t0 = time.perf_counter()
        task = ProbeTask(feats, name, m, info, target, device, com["eval_resize"])
        res = proto.fit(task, cfg)
        summary = {
            key: res[key]
            for key in ("best_lambda", "best_index", "val_scores", "refit_iter", "best_epoch")
            if key in res
        }
        extra = {
            "target": target,
            "eval_resize": com["eval_resize"],
            "num_classes": info["num_classes"],
            "config": res.get("config", asdict(cfg)),
            "seconds": time.perf_counter() - t0,
            "device": res.get("device"),
            **summary,
            **strength,
        }
        records.append(
            make_record(
                params,
                eval_dataset=name,
                protocol=protocol,
                metric=info["metric"],
                val=res["val"],
                test=res["test"],
                extra=extra,
            )
        )
        log(
            f"{protocol} {name} ({target}): val {res['val']:.4f} test {res['test']:.4f} "
            f"[{info['metric']}] in {extra['seconds']:.1f} s"
        )
    return records


def evaluate_call(run_dir, call: dict, *, threads: int | None = None) -> list[dict]:
    """``evaluate_run`` with the arguments of one probe job as a dict
    (:meth:`vcr.plan.jobs.Plan.probe_call`: a study cell's runs, ``pretrain.py --then-probe``),
    at the job's thread count."""
    from vcr.cli import parse_sets, set_threads

    set_threads(threads)
    return evaluate_run(
        run_dir,
        call["protocol"],
        call["datasets"],
        call["manifests"],
        feature_cache=call["feature_cache"],
        sets=parse_sets(call["settings"]),
        device=call["device"],
    )
