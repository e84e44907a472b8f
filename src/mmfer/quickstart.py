"""`mmfer quickstart`: the whole pipeline on the embedded sample corpus, each stage reused when done."""

from __future__ import annotations

import time
from pathlib import Path

from mmfer.config import MmferConfig

MODELS = ("audio-svm", "audio-whisper-linear", "text-tfidf", "audio", "text", "mmmf")


def quickstart(out: str | Path = "mmfer-quickstart", per_speaker: int = 60, seed: int = 0,
               cfg: MmferConfig | None = None, models: tuple[str, ...] = MODELS, report: bool = True,
               echo=print) -> dict:
    from mmfer.api import prepare
    from mmfer.corpora.sample import generate
    from mmfer.training.cv import run_cv, table

    cfg = cfg or MmferConfig()
    out = Path(out).expanduser().resolve()
    t0 = time.perf_counter()
    echo(f"[1/4] sample corpus -> {out / 'corpus'}")
    corpus = generate(out / "corpus", per_speaker=per_speaker, seed=seed)
    echo(f"[2/4] features -> {out / 'store'}")
    res = prepare(corpus, out / "store", features=cfg.features, warn=echo)
    for kind, n in res.extracted.items():
        echo(f"      {kind}: {n} utterances{' (reused)' if kind in res.reused else ''}")
    summaries = []
    for i, model in enumerate(models, start=1):
        echo(f"[3/4] cross-validation {i}/{len(models)}: {model} -> {out / 'runs' / model}")
        summaries.append(run_cv(out / "store", model, cfg, out / "runs" / model, echo=echo))
    echo("\nLeave-one-session-out results on the sample corpus (mean ± std over 5 folds, %; "
         "audio-svm, audio-whisper-linear and text-tfidf are the simple baselines, same folds):\n")
    echo(table(summaries))
    if "mmmf" in models and "audio" in models:
        from mmfer.analysis.compare import compare, format_compare

        echo("\nDoes fusion beat audio alone? mmfer compare runs/mmmf runs/audio:\n")
        echo(format_compare(compare(out / "runs" / "mmmf", out / "runs" / "audio")))
    result = {"out": str(out), "summaries": summaries, "seconds": time.perf_counter() - t0}
    if report:
        from mmfer.analysis.report import build_report

        echo(f"\n[4/4] report -> {out / 'report'}")
        path = build_report([out / "runs" / m for m in models], out / "report", store=out / "store")
        result["report"] = str(path)
        echo(f"      open {path}")
    echo(f"\ndone in {result['seconds']:.0f} s. Next: mmfer predict {out / 'runs' / 'mmmf'} "
         f"{out / 'corpus' / 'Session1' / 'sentences' / 'wav' / 'Ses01F_impro01' / 'Ses01F_impro01_F000.wav'} "
         f"--text \"...\"  (without --text the transcript is recognised; give folders or a long recording "
         "with --out rows.csv --plot timeline.png for a table and a timeline)")
    return result
