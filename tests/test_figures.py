"""Fig. 2 from constructed two-moons files (small grids), and the margins CSV."""

import statistics

import numpy as np
import pandas as pd
import pytest
import torch

from vcr.figures import METHOD_ORDER, figure2, load_two_moons, margin_summary, plot_figure2


def _two_moons_file(path, method, n_seeds=3, gx=17, gy=13, seed=0):
    """A result in the CONTRACT format: logits[s, i, j] = f(xs[j], ys[i]), a tilted boundary."""
    rng = np.random.default_rng(seed)
    xs = torch.linspace(-2, 2, gx)
    ys = torch.linspace(-2, 2, gy)
    logits = torch.stack(
        [xs[None, :] - 0.5 * ys[:, None] + 0.1 * s for s in range(n_seeds)]
    )  # (S, gy, gx)
    X = torch.tensor(rng.uniform(-2, 2, size=(40, 2)), dtype=torch.float32)
    y = torch.where(X[:, 0] > 0, 1.0, -1.0)
    margins = torch.tensor(rng.uniform(0.05, 0.5, size=n_seeds), dtype=torch.float32)
    torch.save(
        {
            "method": method,
            "seeds": list(range(n_seeds)),
            "grid": {"xs": xs, "ys": ys},
            "logits": logits,
            "margins": margins,
            "X": X,
            "y": y,
            "config": {"hidden": 8},
        },
        path,
    )
    return margins.double().tolist()


def test_figure2_renders_and_margins_csv_has_the_right_numbers(tmp_path):
    inputs, margins = [], {}
    for k, method in enumerate(reversed(METHOD_ORDER)):  # given out of order on purpose
        p = tmp_path / f"{method}.pt"
        margins[method] = _two_moons_file(p, method, n_seeds=1 if method == "sd" else 3, seed=k)
        inputs.append(p)
    out = tmp_path / "figs" / "figure2.png"
    csv = tmp_path / "tables" / "figure2_margins.csv"
    summary = figure2(inputs, out, csv)

    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    df = pd.read_csv(csv)
    assert list(df.columns) == ["method", "mean", "std", "n"]
    assert list(df["method"]) == list(METHOD_ORDER)  # paper order
    for _, r in df.iterrows():
        m = margins[r["method"]]
        assert r["n"] == len(m)
        assert r["mean"] == pytest.approx(statistics.fmean(m))
        if len(m) > 1:
            assert r["std"] == pytest.approx(statistics.stdev(m))
        else:
            assert pd.isna(r["std"])  # one seed: no spread
    assert [s["method"] for s in summary] == list(METHOD_ORDER)


def test_panel_titles_carry_margins(tmp_path):
    m = _two_moons_file(tmp_path / "vcr.pt", "vcr", n_seeds=4)
    res = [load_two_moons(tmp_path / "vcr.pt")]
    titles = plot_figure2(res, tmp_path / "f.png")
    assert titles == [f"VCR\nmargin {statistics.fmean(m):.3f} ± {statistics.stdev(m):.3f} (n=4)"]
    assert margin_summary(res)[0]["n"] == 4


def test_bad_inputs_are_clear_errors(tmp_path):
    p = tmp_path / "none.pt"
    _two_moons_file(p, "none")
    d = torch.load(p, weights_only=False)
    d["logits"] = d["logits"].transpose(1, 2)  # (S, gx, gy): wrong orientation
    torch.save(d, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="logits shape"):
        load_two_moons(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="two_moons.py"):
        load_two_moons(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="repeat method"):
        figure2([p, p], tmp_path / "f.png")


def test_cli(tmp_path, capsys):
    from workflow_scripts.figure2 import main

    paths = []
    for method in ("none", "vcr"):
        _two_moons_file(tmp_path / f"{method}.pt", method)
        paths.append(str(tmp_path / f"{method}.pt"))
    out, csv = tmp_path / "f.png", tmp_path / "m.csv"
    assert main(["--inputs", *paths, "--out", str(out), "--margins", str(csv)]) == 0
    assert out.stat().st_size > 0 and len(pd.read_csv(csv)) == 2
    assert "margin" in capsys.readouterr().out
