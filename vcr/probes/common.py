"""What every probe shares: feature tensors on the device, the standardiser, the finite check."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def as_float(X, device, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(X).to(device=device, dtype=dtype)


def as_labels(y, device) -> torch.Tensor:
    return torch.as_tensor(y).reshape(-1).to(device=device, dtype=torch.long)


def num_classes_of(num_classes, *ys) -> int:
    if num_classes is not None:
        return int(num_classes)
    return int(max(int(torch.as_tensor(y).max()) for y in ys if len(y)) + 1)


@dataclass
class Standardizer:
    """z-scoring with statistics of the fitting split only (std floored so constant features
    stay finite)."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, X: torch.Tensor, enabled: bool = True, eps: float = 1e-6) -> Standardizer:
        if not enabled:
            d = X.shape[1]
            return cls(X.new_zeros(d), X.new_ones(d))
        std, mean = torch.std_mean(X, 0, correction=0)
        return cls(mean, std.clamp_min(eps))

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        return (X - self.mean) / self.std

    def to(self, device) -> Standardizer:
        return Standardizer(self.mean.to(device), self.std.to(device))


# Rows per chunk where a probe walks a whole feature matrix (finite check, scoring): a chunk's
# temporaries stay ~0.1 GB each at 2048 features however many rows there are (Places205: 2.4M).
CHUNK_ROWS = 16384


def check_finite(name: str, X: torch.Tensor) -> None:
    # per chunk, and .all() first: summing a bool tensor casts it to int64 (8 bytes a value)
    bad = 0
    for i in range(0, len(X), CHUNK_ROWS):
        finite = torch.isfinite(X[i : i + CHUNK_ROWS])
        if not finite.all():
            bad += int(finite.numel() - finite.count_nonzero())
    if bad:
        raise ValueError(
            f"{name} holds {bad} non-finite values (NaN/inf features from the backbone?)"
        )
