"""Label policies: which raw labels become which classes, and which are dropped (and counted)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from mmfer.errors import MmferError

IEMOCAP_CODES = ("neu", "fru", "ang", "sad", "hap", "exc", "sur", "fea", "dis", "oth", "xxx")
CATEGORY_CODES = {
    "neutral": "neu", "frustration": "fru", "anger": "ang", "sadness": "sad", "happiness": "hap",
    "excited": "exc", "surprise": "sur", "fear": "fea", "disgust": "dis", "other": "oth",
}

PRESETS: dict[str, dict[str, str] | None] = {
    "4class": {"ang": "ang", "hap": "hap", "exc": "hap", "neu": "neu", "sad": "sad"},
    "6class": {c: c for c in ("ang", "hap", "exc", "fru", "neu", "sad")},
    "all": None,  # keep every label the corpus has
}


@dataclass(frozen=True)
class LabelPolicy:
    """Maps raw labels to classes. ``mapping=None`` keeps every label except ``xxx`` (no majority).

    ``min_count`` drops classes rarer than that after mapping (reason ``rare_class:<label>``).
    """

    name: str
    mapping: dict[str, str] | None
    min_count: int = 0

    def apply(self, raw: str) -> str | None:
        if self.mapping is None:
            return None if raw in ("", "xxx") else raw
        return self.mapping.get(raw)

    def describe(self) -> str:
        if self.mapping is None:
            return f"{self.name} (every label but xxx)"
        groups: dict[str, list[str]] = {}
        for raw, target in self.mapping.items():
            groups.setdefault(target, []).append(raw)
        return f"{self.name}: " + ", ".join(
            f"{'+'.join(v)}→{k}" if v != [k] else k for k, v in sorted(groups.items())
        )


def parse_policy(spec: str | dict | None, raw_labels: list[str] | None = None) -> LabelPolicy:
    """A preset name, a ``a=b,c=d`` string, a YAML/JSON file of a mapping, or a mapping itself.

    ``None`` picks ``4class`` when every raw label is an IEMOCAP code, else ``all``.
    """
    if spec is None:
        spec = "4class" if raw_labels is not None and set(raw_labels) <= set(IEMOCAP_CODES) else "all"
    if isinstance(spec, dict):
        return LabelPolicy("custom", {str(k): str(v) for k, v in spec.items()})
    if spec in PRESETS:
        return LabelPolicy(spec, PRESETS[spec])
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        if not path.is_file():
            raise MmferError(f"label mapping file not found: {path}")
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
        if not isinstance(data, dict) or not data:
            raise MmferError(f"{path}: a label mapping must be a non-empty mapping raw_label: class")
        return LabelPolicy(path.stem, {str(k): str(v) for k, v in data.items()})
    if "=" in spec:
        mapping = {}
        for part in spec.split(","):
            raw, sep, target = part.partition("=")
            if not sep or not raw.strip() or not target.strip():
                raise MmferError(f"bad label mapping entry {part!r}: write raw=class, e.g. 'angry=ang'")
            mapping[raw.strip()] = target.strip()
        return LabelPolicy("custom", mapping)
    raise MmferError(
        f"unknown label policy {spec!r}: use one of {', '.join(PRESETS)}, a mapping like "
        "'angry=ang,happy=hap', or a YAML/JSON mapping file"
    )


def refine(raw_labels: list[str], policy: LabelPolicy) -> tuple[list[str | None], Counter]:
    """Refined label per utterance (None = dropped) and the count of drops per reason."""
    refined = [policy.apply(r) for r in raw_labels]
    dropped: Counter = Counter(f"label:{r or 'empty'}" for r, t in zip(raw_labels, refined) if t is None)
    if policy.min_count:
        counts = Counter(t for t in refined if t is not None)
        rare = {c for c, n in counts.items() if n < policy.min_count}
        for i, t in enumerate(refined):
            if t in rare:
                dropped[f"rare_class:{t}"] += 1
                refined[i] = None
    return refined, dropped


def keep_labelled(rows: list[dict], policy: LabelPolicy, dropped: Counter) -> list[dict]:
    """Set each row's refined ``label``; return the rows the policy keeps, counting the rest in ``dropped``."""
    refined, label_drops = refine([r["label_raw"] for r in rows], policy)
    dropped.update(label_drops)
    kept = []
    for row, lab in zip(rows, refined):
        if lab is not None:
            row["label"] = lab
            kept.append(row)
    return kept
