"""The five MadryLab ``robustness`` ImageNet subsets of Table 2 (living_9, mixed_10, mixed_13,
geirhos_16, big_12): superclass labels for pretraining, subclass labels for probing.

The hierarchy is built as ``robustness.tools.imagenet_helpers.ImageNetHierarchy`` does, from
``wordnet.is_a.txt`` ("parent child" lines) beside ImageNet's ``train/``:
- single-parent tree: a synset listed under several parents keeps the parent of the LAST line;
- a superclass's ImageNet descendants are the ImageNet classes whose single-parent chain passes
  through it (an ImageNet class counts as its own descendant);
- ``get_subclasses(balanced=True)``: ``ndesc_min`` = the smallest descendant count among the
  chosen superclasses; each superclass keeps the first ``ndesc_min`` of its sorted class indices
  (lowest ImageNet index first; indices are sorted-wnid order); then the sets must be disjoint.
Expected subclass counts with the real files: 72, 60, 78, 32, 240.

big_12 lists both dog (n02084071) and carnivore (n02075296). If dog's last parent line is canine,
dog's classes are also carnivore's, and the lowest-20 carnivore classes (sea lion, then dogs)
overlap dog's: robustness's disjointness assert fails. ``overlap`` picks what happens:
- ``"nearest"`` (default): only when the robustness result is NOT disjoint, every ImageNet class
  is given to the nearest chosen superclass on its chain (a dog breed to dog, not carnivore:
  "carnivore" then means "other carnivores", the only reading under which both can be classes
  of one classifier), counts are recomputed and balancing redone. When the robustness result is
  disjoint this rule changes nothing, so it equals robustness wherever robustness runs.
- ``"error"``: raise, as robustness does.
The manifest records the overlap found and the rule applied.
"""

from __future__ import annotations

from pathlib import Path

from vcr.data import base, imagenet
from vcr.errors import ConfigError, DatasetError

SUPERCLASSES: dict[str, list[str]] = {
    "living_9": [
        "n02084071",
        "n01503061",
        "n01767661",
        "n01661091",
        "n02469914",
        "n02512053",
        "n02120997",
        "n02401031",
        "n01627424",
    ],
    "mixed_10": [
        "n02084071",
        "n01503061",
        "n02159955",
        "n02484322",
        "n02958343",
        "n02120997",
        "n04490091",
        "n13134947",
        "n12992868",
        "n02858304",
    ],
    "mixed_13": [
        "n02084071",
        "n01503061",
        "n02159955",
        "n03405725",
        "n02512053",
        "n02484322",
        "n02958343",
        "n02120997",
        "n04490091",
        "n13134947",
        "n12992868",
        "n02858304",
        "n03082979",
    ],
    "geirhos_16": [
        "n02686568",
        "n02131653",
        "n02834778",
        "n01503061",
        "n02858304",
        "n02876657",
        "n02958343",
        "n02121808",
        "n03001627",
        "n03046257",
        "n02084071",
        "n02503517",
        "n03614532",
        "n03623556",
        "n03862676",
        "n04490091",
    ],
    "big_12": [
        "n02084071",
        "n04341686",
        "n01503061",
        "n03051540",
        "n04576211",
        "n01661091",
        "n02075296",
        "n02159955",
        "n03800933",
        "n07555863",
        "n03405725",
        "n02469914",
    ],
}
EXPECTED_SUBCLASSES = {
    "living_9": 72,
    "mixed_10": 60,
    "mixed_13": 78,
    "geirhos_16": 32,
    "big_12": 240,
}
OBTAIN = (
    "put wordnet.is_a.txt and words.txt (ImageNet's WordNet metadata, e.g. "
    "http://www.image-net.org/data/wordnet.is_a.txt and .../data/words.txt) beside "
    "data_root/imagenet/train/. " + imagenet.OBTAIN
)


class Hierarchy:
    """Single-parent WordNet tree restricted to what robustness's subset selection needs."""

    def __init__(self, is_a_lines, in_wnids):
        self.parent: dict[str, str] = {}
        for line in is_a_lines:
            line = line.strip()
            if not line:
                continue
            p, c = line.split()
            self.parent[c] = p  # last line wins (Node.add_child overwrites parent_wnid)
        self.in_wnids = list(in_wnids)
        self.index = {w: i for i, w in enumerate(sorted(self.in_wnids))}
        self.chains: dict[str, list[str]] = {}
        self.descendants: dict[str, set[str]] = {}
        for w in self.in_wnids:
            chain, node, seen = [], w, set()
            while node is not None and node not in seen:
                seen.add(node)
                chain.append(node)
                self.descendants.setdefault(node, set()).add(w)
                node = self.parent.get(node)
            self.chains[w] = chain

    @classmethod
    def from_file(cls, path: Path, in_wnids):
        with open(path, encoding="utf-8") as fh:
            return cls(fh.readlines(), in_wnids)

    def count_in(self, wnid: str) -> int:
        return len(self.descendants.get(wnid, ()))

    def get_subclasses(
        self, superclasses: list[str], balanced: bool = True, overlap: str = "nearest"
    ):
        """(list of sets of class indices per superclass, report dict)."""
        if overlap not in ("nearest", "error"):
            raise ConfigError(f"overlap={overlap!r}: expected 'nearest' or 'error'")
        for s in superclasses:
            if self.count_in(s) == 0:
                raise DatasetError(
                    f"superclass {s} has no ImageNet descendant in this hierarchy "
                    "(wrong or truncated wordnet.is_a.txt?)"
                )
        desc = {s: sorted(self.index[w] for w in self.descendants[s]) for s in superclasses}
        ranges = self._balance(superclasses, desc, balanced)
        clashes = self._clashes(superclasses, ranges)
        report = {"overlap_found": clashes, "rule": None}
        if clashes:
            if overlap == "error":
                raise DatasetError(
                    f"superclasses overlap after balancing (robustness asserts here): {clashes}; "
                    "use overlap='nearest' to give each class to its nearest superclass"
                )
            chosen = set(superclasses)
            nearest = {s: [] for s in superclasses}
            for w in self.in_wnids:
                hit = next((a for a in self.chains[w] if a in chosen), None)
                if hit is not None:
                    nearest[hit].append(self.index[w])
            desc = {s: sorted(v) for s, v in nearest.items()}
            ranges = self._balance(superclasses, desc, balanced)
            assert not self._clashes(superclasses, ranges)
            report["rule"] = "nearest"
        report["ndesc_min"] = min(len(r) for r in ranges)
        report["descendant_counts"] = {s: len(desc[s]) for s in superclasses}
        return ranges, report

    @staticmethod
    def _balance(superclasses, desc, balanced):
        n_min = min(len(desc[s]) for s in superclasses)
        if n_min == 0:
            raise DatasetError(f"a superclass has no ImageNet class left: {desc}")
        return [set(desc[s][:n_min]) if balanced else set(desc[s]) for s in superclasses]

    @staticmethod
    def _clashes(superclasses, ranges):
        out = []
        for i in range(len(ranges)):
            for j in range(i + 1, len(ranges)):
                inter = ranges[i] & ranges[j]
                if inter:
                    out.append([superclasses[i], superclasses[j], sorted(inter)[:5], len(inter)])
        return out


def _prepare_subset(spec, *, data_root, out_dir, seed, allow_download, opts):
    root = base.dataset_root(spec, data_root, opts)
    if not root.is_dir():
        raise base.missing(spec, "the ImageNet folder is missing", root)
    is_a = Path(opts.get("is_a_file") or root / "wordnet.is_a.txt")
    if not is_a.exists():
        raise base.missing(spec, f"hierarchy file {is_a.name} is missing", is_a.parent)
    strict = bool(opts.get("strict", True))
    scanned = imagenet.scan(spec, root, strict=strict)
    wnids = scanned["wnids"]
    hier = Hierarchy.from_file(is_a, wnids)
    supers = SUPERCLASSES[spec.name]
    ranges, report = hier.get_subclasses(
        supers, balanced=bool(opts.get("balanced", True)), overlap=opts.get("overlap", "nearest")
    )
    n_sub = sum(len(r) for r in ranges)
    if strict and n_sub != EXPECTED_SUBCLASSES[spec.name]:
        raise base.missing(
            spec,
            f"{n_sub} subclasses, expected {EXPECTED_SUBCLASSES[spec.name]}: "
            "the hierarchy files are not ImageNet's",
            is_a,
        )
    sub_indices = sorted(i for r in ranges for i in r)
    sub_of = {ci: k for k, ci in enumerate(sub_indices)}
    super_of = {ci: s for s, r in enumerate(ranges) for ci in r}
    names_all = imagenet.class_names(root, wnids)
    super_names = [imagenet.class_names(root, [w])[0] for w in supers]
    rows = {
        wnids[ci]: {"default": super_of[ci], "super": super_of[ci], "sub": sub_of[ci]}
        for ci in sub_indices
    }
    per_class = int(opts.get("val_per_class", 10))
    index = imagenet.file_index(
        imagenet.build_splits(scanned, rows, seed=seed, per_class=per_class)
    )
    classes = {
        "default": super_names,
        "super": super_names,
        "sub": [names_all[ci] for ci in sub_indices],
    }
    base.check_split_labels(spec, index, classes)
    return {
        "root": str(root),
        "classes": classes,
        "superclass_wnids": supers,
        "subclass_wnids": [wnids[ci] for ci in sub_indices],
        "index": base.write_index(out_dir, index),
        "split_sizes": base.split_sizes(index),
        "mean": [0.4717, 0.4499, 0.3837],  # robustness's RestrictedImageNet statistics
        "std": [0.2600, 0.2516, 0.2575],
        "checks": {
            "strict": strict,
            "hierarchy": str(is_a),
            "subclasses": n_sub,
            "hierarchy_sha256": base.file_sha256(is_a),
            **report,
        },
    }


for _name, _supers in SUPERCLASSES.items():
    base.register(
        base.DatasetSpec(
            _name,
            "subsets",
            _prepare_subset,
            f"robustness {_name}: {len(_supers)} superclasses (default/super), "
            f"{EXPECTED_SUBCLASSES[_name]} subclasses (sub)",
            obtain=OBTAIN,
            subdir="imagenet",
        )
    )
