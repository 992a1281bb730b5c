"""Table 5 metrics on frozen features: CDNV, nearest-class-centre (NCC) accuracy, MINE I(X; Z).

Definitions (PAPER_PROTOCOLS.md §8; VCR Table 5 gives none of them):

- ``cdnv(X, y)`` (Galanti et al. 2022): for classes i≠j,
  ``V(i, j) = (Var_i + Var_j) / (2 ‖μ_i − μ_j‖²)`` with ``Var_c = E‖x − μ_c‖²`` the *total*
  variance (trace of the class covariance); the number is the average over all unordered pairs
  (as ``rhubarbwu/neural-collapse`` ``variability_cdnv``). Lower = more collapse.
- ``ncc_accuracy(Xtrain, ytrain, X, y)``: accuracy of ``argmin_c ‖x − μ_c‖`` with the class means
  of the training features. **Table 5's "NCC" is read as NCC accuracy on the training features**
  (``X = Xtrain``): the baseline's 0.99 vs VCR's 0.81 fits "more collapse = higher" (train NCC
  accuracy → 1 under neural collapse). ``ncc_mismatch`` (Papyan's NC4: fraction where NCC
  disagrees with the network's prediction) is the alternative, one argument away.
- ``mine_mi_bits(X, Z, **cfg)``: MINE (Belghazi et al. 2018), Donsker–Varadhan bound
  ``I(X;Z) ≥ E_P[T] − log E_{P_X⊗P_Z}[e^T]`` with the moving-average bias-corrected gradient
  (r = 0.01), reported in **bits**. See ``MineConfig`` for the estimator and why.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from vcr.cli import coerce, resolve_device, with_overrides
from vcr.errors import ConfigError
from vcr.names import COLLAPSE_METRICS
from vcr.records import run_params_and_final
from vcr.runlog import TaskProgress


def _f64(X) -> torch.Tensor:
    X = torch.as_tensor(X).double()
    if X.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(X.shape)}")
    if not torch.isfinite(X).all():
        raise ValueError("features hold NaN/inf values")
    return X


def _labels(y, n: int) -> torch.Tensor:
    y = torch.as_tensor(y).reshape(-1).long()
    if y.numel() != n:
        raise ValueError(f"{y.numel()} labels for {n} feature rows")
    return y


def class_means(X, y) -> tuple[torch.Tensor, torch.Tensor]:
    """``(classes, means)``: the sorted labels present and their feature means (float64)."""
    X = _f64(X)
    y = _labels(y, X.shape[0])
    classes, inv = torch.unique(y, return_inverse=True)
    sums = torch.zeros(len(classes), X.shape[1], dtype=X.dtype).index_add_(0, inv, X)
    counts = torch.bincount(inv, minlength=len(classes)).to(X.dtype)
    return classes, sums / counts[:, None]


def cdnv(X, y) -> float:
    """Class-distance normalised variance averaged over all class pairs (Galanti et al.)."""
    X = _f64(X)
    y = _labels(y, X.shape[0])
    classes, means = class_means(X, y)
    if len(classes) < 2:
        raise ValueError("cdnv needs at least two classes")
    _, inv = torch.unique(y, return_inverse=True)
    sq = ((X - means[inv]) ** 2).sum(1)
    counts = torch.bincount(inv, minlength=len(classes)).double()
    var = torch.zeros(len(classes), dtype=X.dtype).index_add_(0, inv, sq) / counts
    dist2 = torch.cdist(means, means).pow(2)
    iu = torch.triu_indices(len(classes), len(classes), offset=1)
    num = (var[:, None] + var[None, :])[iu[0], iu[1]]
    den = 2 * dist2[iu[0], iu[1]]
    if (den == 0).any():
        return math.inf  # two classes share a mean: no separation at all
    return float((num / den).mean())


def ncc_predict(Xtrain, ytrain, X, *, chunk: int = 8192) -> torch.Tensor:
    """Nearest-class-centre labels of ``X`` with the class means of ``(Xtrain, ytrain)``."""
    classes, means = class_means(Xtrain, ytrain)
    X = _f64(X)
    out = []
    for i in range(0, X.shape[0], chunk):
        out.append(torch.cdist(X[i : i + chunk], means).argmin(1))
    idx = torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
    return classes[idx]


def ncc_accuracy(Xtrain, ytrain, X, y) -> float:
    """Fraction of ``X`` whose nearest training class mean is its own class ``y``."""
    y = _labels(y, torch.as_tensor(X).shape[0])
    return float((ncc_predict(Xtrain, ytrain, X) == y).double().mean())


def ncc_mismatch(Xtrain, ytrain, X, pred) -> float:
    """Fraction of ``X`` where the NCC label differs from a classifier's prediction ``pred``
    (Papyan et al.'s NC4)."""
    pred = _labels(pred, torch.as_tensor(X).shape[0])
    return float((ncc_predict(Xtrain, ytrain, X) != pred).double().mean())


# --------------------------------------------------------------------------------------------
# MINE


@dataclass
class MineConfig:
    """MINE estimator settings (``--set mine.<key>=...`` in ``collapse_metrics.py``).

    Statistics network: MLP on ``concat(x, z)``, two hidden layers of 100 ELU units, weights
    N(0, 0.02), Adam lr 1e-3 (the common community settings; the MINE paper's own appendix was
    not found). Inputs are z-scored per dimension. Gradient: moving-average bias correction,
    ``ma = (1−r)·ma + r·mean(e^{T_marg})``, loss ``−(mean T_joint − mean e^{T_marg} / ma)``.

    The reported number is the DV bound evaluated with the trained T on a held-out fraction
    (``eval_fraction``) of the pairs, with the marginal term pooled over ``eval_shuffles``
    permutations of z; a held-out estimate does not reward T for memorising the training pairs.

    For images (Table 5), X is the eval-transformed image average-pooled to ``x_pool`` x
    ``x_pool`` and flattened (3·8·8 = 192 dims by default), and Z the penultimate features.
    Why: a fixed downsampling keeps the estimator identical across backbones; a learned conv
    encoder inside T is the alternative. Note that for a deterministic network I(X; Z) is
    infinite in theory; MINE's finite value is a capacity/sample-limited lower bound that is
    only comparable between runs under identical settings (as the paper's comparison needs).
    """

    hidden: tuple[int, ...] = (100, 100)
    init_std: float = 0.02
    lr: float = 1e-3
    batch_size: int = 256
    steps: int = 3000
    ema_rate: float = 0.01
    eval_fraction: float = 0.2
    eval_shuffles: int = 10
    standardize: bool = True
    max_samples: int = 10_000  # pairs used (seeded subsample) for image features
    x_pool: int = 8
    seed: int = 0
    # A 100-unit MLP gains nothing from intra-op threads; with 2 threads on a busy 2-core machine
    # each step was measured 9x slower (spin-waiting), so the estimator runs single-threaded.
    threads: int = 1


def mine_config(**overrides) -> MineConfig:
    """``MineConfig`` with ``overrides`` (``--set mine.<key>=...``) coerced to its field types."""
    return with_overrides(MineConfig(), overrides, where="MINE (mine.<key>)")


class StatisticsNet(torch.nn.Module):
    def __init__(self, dx: int, dz: int, hidden=(100, 100), init_std: float = 0.02):
        super().__init__()
        layers, d = [], dx + dz
        for h in hidden:
            layers += [torch.nn.Linear(d, h), torch.nn.ELU()]
            d = h
        layers.append(torch.nn.Linear(d, 1))
        self.net = torch.nn.Sequential(*layers)
        for m in self.net:
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, std=init_std)
                torch.nn.init.zeros_(m.bias)

    def forward(self, x, z):
        return self.net(torch.cat([x, z], 1)).squeeze(1)


def _dv_bound(T, x, z, gen, shuffles: int) -> float:
    with torch.no_grad():
        joint = T(x, z).mean()
        marg = torch.cat(
            [T(x, z[torch.randperm(z.shape[0], generator=gen)]) for _ in range(shuffles)]
        )
        return float(joint - (torch.logsumexp(marg, 0) - math.log(marg.numel())))


def mine_mi_bits(X, Z, *, config: MineConfig | None = None, device=None, **cfg) -> dict[str, Any]:
    """MINE estimate of I(X; Z) in bits for paired rows of ``X`` (N, dx) and ``Z`` (N, dz).

    Returns ``{"bits", "nats", "train_bits" (last 100-step mean of the training bound),
    "n_train", "n_eval", "seconds", "config"}``.
    """
    c = config or mine_config(**cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(c.threads)))
    try:
        return _mine(X, Z, c, device)
    finally:
        torch.set_num_threads(threads)


def _mine(X, Z, c: MineConfig, device) -> dict[str, Any]:
    X = torch.as_tensor(X).float().flatten(1)
    Z = torch.as_tensor(Z).float().flatten(1)
    if X.shape[0] != Z.shape[0]:
        raise ValueError(f"MINE needs paired samples: X has {X.shape[0]} rows, Z {Z.shape[0]}")
    for name, A in (("X", X), ("Z", Z)):
        if not torch.isfinite(A).all():
            raise ValueError(f"MINE input {name} holds NaN/inf values")
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(int(c.seed))
    torch.manual_seed(int(c.seed))
    n = X.shape[0]
    perm = torch.randperm(n, generator=gen)
    n_eval = max(2, int(round(n * c.eval_fraction))) if c.eval_fraction > 0 else 0
    ev, tr = perm[:n_eval], perm[n_eval:]
    if len(tr) < 2:
        raise ValueError(f"MINE: {n} samples are too few (eval_fraction={c.eval_fraction})")
    if c.standardize:  # statistics of the training pairs only
        X = (X - X[tr].mean(0)) / X[tr].std(0).clamp_min(1e-6)
        Z = (Z - Z[tr].mean(0)) / Z[tr].std(0).clamp_min(1e-6)
    X, Z = X.to(dev), Z.to(dev)
    T = StatisticsNet(X.shape[1], Z.shape[1], c.hidden, c.init_std).to(dev)
    opt = torch.optim.Adam(T.parameters(), lr=c.lr)
    ma = torch.tensor(1.0, device=dev)
    bs = min(int(c.batch_size), len(tr))
    trace = []
    t0 = time.perf_counter()
    progress = TaskProgress("MINE", int(c.steps), unit="step")
    for step in range(int(c.steps)):
        idx = tr[torch.randint(len(tr), (bs,), generator=gen)]
        idx_m = tr[torch.randint(len(tr), (bs,), generator=gen)]  # z from the product of marginals
        x, z, zm = X[idx], Z[idx], Z[idx_m]
        t_joint = T(x, z)
        e_marg = torch.exp(T(x, zm))
        ma = (1 - c.ema_rate) * ma + c.ema_rate * e_marg.mean().detach()
        loss = -(t_joint.mean() - e_marg.mean() / ma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mi = float(t_joint.mean().detach() - torch.log(e_marg.mean().detach()))
        if not math.isfinite(mi):
            raise FloatingPointError(f"MINE bound became {mi} at step {step} (lr={c.lr})")
        trace.append(mi)
        progress.update(train_bits=mi / math.log(2))
    progress.close()
    if n_eval:
        nats = _dv_bound(T, X[ev], Z[ev], gen, int(c.eval_shuffles))
    else:
        nats = _dv_bound(T, X[tr], Z[tr], gen, int(c.eval_shuffles))
    tail = trace[-100:] or [float("nan")]
    return {
        "bits": nats / math.log(2),
        "nats": nats,
        "train_bits": sum(tail) / len(tail) / math.log(2),
        "n_train": len(tr),
        "n_eval": n_eval,
        "seconds": time.perf_counter() - t0,
        "config": asdict(c),
    }


def pool_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) images → (N, C·size·size) by adaptive average pooling (MINE's X)."""
    return torch.nn.functional.adaptive_avg_pool2d(x.float(), size).flatten(1)


# --------------------------------------------------------------------------------------------
# records for the CLIs (collapse_metrics.py, classifier_metric.py)


# --set keys of collapse_metrics.py besides ``mine.<MineConfig key>``
COLLAPSE_SETTINGS = {
    "split": "train",  # Table 5 is read as metrics of the training features
    "target": None,  # None = the label set the run was trained on (run.json params.target)
    "max_samples": 0,  # CDNV/NCC on a seeded subsample of this size; 0 = all
    "extract_batch_size": 256,
    "extract_workers": -1,
    "cache_dtype": "float32",
    "fast_array_loader": True,
}


def _mine_inputs(feats, ds, fast, idx, pool: int, batch: int = 512) -> torch.Tensor:
    """Average-pooled eval-transformed images of the rows ``idx`` (MINE's X)."""
    if fast is not None:
        from vcr.data.loading import normalized_batch

        out = []
        for i in range(0, len(idx), batch):
            rows = idx[i : i + batch].numpy()
            out.append(pool_images(normalized_batch(ds.images[rows], *fast), pool))
        return torch.cat(out)
    sub = torch.utils.data.Subset(ds, idx.tolist())
    from vcr.features import auto_workers

    loader = torch.utils.data.DataLoader(
        sub, batch_size=batch, num_workers=auto_workers(feats.num_workers)
    )
    return torch.cat([pool_images(x, pool) for x, _ in loader])


def collapse_records(run_dir, manifest, *, feature_cache=None, sets=None, device=None) -> dict:
    """``{"cdnv": record, "ncc": record, "mi": record}`` of a run on its own dataset's
    ``split`` (train by default). val = final.json val_top1 (may be None for SSL runs)."""
    from vcr.data import dataset_info
    from vcr.features import RunFeatures
    from vcr.records import make_record

    sets = dict(sets or {})
    mine_sets = {k[5:]: v for k, v in sets.items() if k.startswith("mine.")}
    com = dict(COLLAPSE_SETTINGS)
    for k, v in sets.items():
        if k.startswith("mine."):
            continue
        if k not in com:
            raise ConfigError(
                f"--set {k}: unknown key; expected one of {sorted(com)} or mine.<key> with "
                f"<key> in {sorted(f.name for f in fields(MineConfig))}"
            )
        com[k] = v if com[k] is None else coerce(f"--set {k}", v, com[k])
    mcfg = mine_config(**mine_sets)

    from pathlib import Path

    if not Path(manifest).is_file():
        raise FileNotFoundError(
            f"manifest {manifest} is missing: run workflow_scripts/prepare_data.py for the "
            "run's dataset first"
        )
    params, final = run_params_and_final(run_dir)
    target = com["target"] or params["target"]
    info = dataset_info(manifest, target)
    name = info["name"]
    feats = RunFeatures.from_settings(run_dir, com, cache_dir=feature_cache, device=device)
    X, y = feats.get(name, com["split"], manifest=manifest, target=target)
    gen = torch.Generator().manual_seed(0)
    Xs, ys = X, y
    if com["max_samples"] and X.shape[0] > com["max_samples"]:
        sel = torch.randperm(X.shape[0], generator=gen)[: com["max_samples"]]
        Xs, ys = X[sel], y[sel]
    values = {"cdnv": cdnv(Xs, ys), "ncc": ncc_accuracy(Xs, ys, Xs, ys)}
    ds, _, fast = feats.dataset(name, com["split"], manifest=manifest, target=target)
    idx = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(mcfg.seed))
    idx = idx[: mcfg.max_samples] if mcfg.max_samples else idx
    x_img = _mine_inputs(feats, ds, fast, idx, mcfg.x_pool)
    mi = mine_mi_bits(x_img, X[idx], config=mcfg, device=device)
    values["mi"] = mi["bits"]
    from vcr.records import run_strength

    common_extra = {"split": com["split"], "target": target, "n": int(Xs.shape[0])}
    common_extra.update(run_strength(final))
    extras = {
        "cdnv": {**common_extra, "definition": "Galanti CDNV, total variance, mean over pairs"},
        "ncc": {**common_extra, "definition": "NCC accuracy on the training features"},
        "mi": {
            **run_strength(final),
            "split": com["split"],
            "target": target,
            "unit": "bits",
            "nats": mi["nats"],
            "train_bits": mi["train_bits"],
            "n_train": mi["n_train"],
            "n_eval": mi["n_eval"],
            "x": f"eval images avg-pooled to {mcfg.x_pool}x{mcfg.x_pool}",
            "config": mi["config"],
        },
    }
    return {
        m: make_record(
            params,
            eval_dataset=name,
            protocol="collapse",
            metric=m,
            val=final.get("val_top1"),
            test=values[m],
            extra=extras[m],
        )
        for m in COLLAPSE_METRICS
    }
