import json

import pytest

from vcr import io
from vcr.errors import ConfigError
from vcr.records import RunSpec, make_record, read_records, write_record


def _spec(**kw):
    base = dict(
        scale="mini",
        method="supervised",
        arch="mini_resnet",
        dataset="mini_objects",
        target="sub",
        recipe="mini_supervised",
    )
    base.update(kw)
    return RunSpec(**base)


def test_relpath_is_a_function_of_the_parameters():
    a = _spec(placement="blocks", alpha=0.64, beta=0.04, lr=0.016, seed=1)
    b = _spec(placement="blocks", alpha=0.64, beta=0.04, lr=0.016, seed=1)
    assert a.relpath() == b.relpath()
    assert a.relpath() == (
        "supervised/mini_resnet/mini_objects-sub/mini_supervised/"
        "blocks.eq2/a0.64_b0.04_lr0.016/seed1"
    )
    assert _spec().relpath().split("/")[4] == "none"
    assert _spec(placement="blocks", delta=0.5).reg_tag() == "blocks.eq2.huber0.5"


def test_bad_parameters_name_the_key():
    with pytest.raises(ConfigError, match="run.placement"):
        _spec(placement="everywhere")
    with pytest.raises(ConfigError, match="run.alpha"):
        _spec(alpha=float("nan"))
    with pytest.raises(ConfigError, match="unknown run parameter"):
        RunSpec.from_dict({**_spec().to_dict(), "colour": 1})


def test_record_roundtrip_and_atomic_write(tmp_path):
    rec = make_record(
        _spec(),
        eval_dataset="digits",
        protocol="lbfgs",
        metric="top1",
        val=0.5,
        test=0.25,
        extra={"lambda": 1e-3},
    )
    path = tmp_path / "r.json"
    write_record(path, rec)
    assert read_records([path]) == [json.loads(path.read_text())]
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind
    with pytest.raises(ValueError, match="not finite"):
        make_record(
            _spec(), eval_dataset="digits", protocol="lbfgs", metric="top1", test=float("nan")
        )


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
