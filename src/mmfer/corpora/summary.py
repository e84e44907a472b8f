"""What `mmfer corpus inspect` prints: counts a user checks before spending hours on features."""

from __future__ import annotations

from collections import Counter

from mmfer.corpora.schema import Corpus


def summarize(corpus: Corpus) -> dict:
    """The documented JSON shape; label/session/speaker counts are over kept utterances."""
    t = corpus.table

    def counts(col: str) -> dict[str, int]:
        return {k: int(v) for k, v in sorted(Counter(t[col]).items())}

    return {
        "corpus": corpus.name,
        "utterances": int(corpus.parsed),
        "kept": int(len(t)),
        "labels": counts("label"),
        "sessions": counts("session") if (t["session"] != "").any() else {},
        "speakers": counts("speaker"),
        "dropped": {k: int(v) for k, v in sorted(corpus.dropped.items())},
        "missing_alignment": int(corpus.missing_alignment),
    }


def render(corpus: Corpus) -> str:
    s = summarize(corpus)
    lines = [
        f"corpus      {s['corpus']}  ({corpus.root})",
        f"modalities  {', '.join(corpus.modalities)}",
        f"labels      policy {corpus.policy}",
        f"utterances  {s['utterances']} parsed, {s['kept']} kept",
        "",
    ]
    lines += _table("label", s["labels"], s["kept"])
    if s["sessions"]:
        lines += _table("session", s["sessions"], s["kept"])
    lines += _table("speaker", s["speakers"], s["kept"])
    if s["dropped"]:
        lines += _table("dropped because", s["dropped"], sum(s["dropped"].values()))
    if "text" in corpus.modalities and corpus.has("word_times"):
        lines.append(f"without forced alignment (no word times): {s['missing_alignment']}")
    if corpus.problems:
        lines.append(f"\n{len(corpus.problems)} problem(s) skipped (first 10):")
        lines += [f"  {p}" for p in corpus.problems[:10]]
    return "\n".join(lines)


def _table(title: str, counts: dict[str, int], total: int) -> list[str]:
    width = max([len(title)] + [len(k) for k in counts])
    out = [f"{title:<{width}}  {'n':>6}  {'%':>6}", f"{'-' * width}  {'-' * 6}  {'-' * 6}"]
    for k, v in counts.items():
        out.append(f"{k:<{width}}  {v:>6}  {100 * v / max(total, 1):>5.1f}%")
    out.append("")
    return out
