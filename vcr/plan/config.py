"""Reading ``config.yaml`` outside Snakemake (``python -m vcr.plan``, the tests), the way
Snakemake does: ``--configfile`` files deep-merged over it, ``--config key=value`` on top, and
``config.schema.yaml`` validation."""

from __future__ import annotations

from pathlib import Path

from vcr.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "config.schema.yaml"


def load_config(path: str | Path = "config.yaml", overrides: dict | None = None) -> dict:
    """Read config.yaml (+ top-level overrides, like ``snakemake --config k=v``)."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    cfg.update(overrides or {})
    return cfg


def deep_update(base: dict, new: dict) -> dict:
    """Merge ``new`` into a copy of ``base`` as Snakemake merges ``--configfile`` files."""
    out = dict(base)
    for k, v in new.items():
        out[k] = (
            deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def validate_config(cfg: dict, schema: str | Path = SCHEMA) -> dict:
    """Raise ``ConfigError`` naming the first key that breaks ``config.schema.yaml``."""
    check_schema(cfg, schema, what="config")
    return cfg


def check_schema(obj: dict, schema: str | Path, *, what: str) -> None:
    """Validate ``obj`` against a JSON schema written in YAML; the error names the key."""
    import jsonschema
    import yaml

    with open(schema, encoding="utf-8") as fh:
        rules = yaml.safe_load(fh)
    errors = sorted(
        jsonschema.Draft202012Validator(rules).iter_errors(obj), key=lambda e: list(e.path)
    )
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.path) or "(top level)"
        raise ConfigError(f"{what}: {where}: {e.message}")
