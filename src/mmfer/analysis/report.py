"""`mmfer report`: one self-contained HTML page (images embedded) from one or more cv runs."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

from mmfer.analysis import plots
from mmfer.features.audio import SAMPLE_RATE, frame_offset
from mmfer.io import write_text
from mmfer.runs import Run, find_runs
from mmfer.streams import STREAMS

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.9em}td,th{padding:.3em .8em;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}.grid{display:flex;flex-wrap:wrap;gap:1em}
.card{border:1px solid #e3e3e3;border-radius:6px;padding:.8em;margin:1em 0}.muted{color:#777;font-size:.85em}
img{max-width:100%}"""


def _img(fig, alt: str) -> str:
    data = base64.b64encode(plots.to_png(fig)).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def pick_examples(pred: pd.DataFrame, classes: list[str]) -> list[tuple[str, pd.Series]]:
    """Instructive utterances: confident right, confident wrong, audio-led and text-led (when gated)."""
    p = pred.copy()
    p["conf"] = [max(x) for x in p["probs"]]
    p["ok"] = p["true"] == p["pred"]
    chosen: list[tuple[str, pd.Series]] = []
    seen: set[str] = set()

    def take(title: str, frame: pd.DataFrame, by: str, ascending: bool) -> None:
        frame = frame[~frame["utt_id"].isin(seen)].sort_values(by, ascending=ascending)
        if len(frame):
            row = frame.iloc[0]
            seen.add(row["utt_id"])
            chosen.append((title, row))

    take("confident and right", p[p["ok"]], "conf", False)
    take("confident and wrong", p[~p["ok"]], "conf", False)
    if p["gate"].notna().any():
        take("audio-led (highest acoustic gate)", p[p["ok"] & p["gate"].notna()], "gate", False)
        take("text-led (lowest acoustic gate)", p[p["ok"] & p["gate"].notna()], "gate", True)
    return chosen


def build_report(run_paths: list[str | Path], out: str | Path, store: str | Path | None = None,
                 n_examples: int = 4) -> Path:
    runs = [Run(p) for rp in run_paths for p in find_runs(Path(rp))]
    out = Path(out).expanduser().resolve()
    store_path = Path(store) if store else Path(runs[0].provenance["store"])
    table = None
    if (store_path / "corpus.parquet").is_file():
        from mmfer.corpora import load

        table = load(store_path / "corpus.parquet").table.set_index("utt_id")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mmfer report</title><style>{CSS}</style>"
             "</head><body><h1>mmfer report</h1>",
             f"<p class='muted'>runs: {', '.join(html.escape(str(r.path)) for r in runs)}</p>"]
    parts.append(_results(runs))
    parts.append(_against_baseline(runs))
    parts.append(_confusions(runs))
    parts.append(_gate(runs))
    parts.append(_examples(runs, table, n_examples))
    parts.append(_curves(runs))
    parts.append("</body></html>")
    path = out / "index.html"
    write_text(path, "\n".join(parts))
    return path


def _results(runs: list[Run]) -> str:
    protocols = sorted({r.summary.get("protocol") or "loso-session" for r in runs})
    rows = [f"<section id='results'><h2>Results</h2><p>Protocol: {html.escape(', '.join(protocols))}; mean ± std "
            "over folds. WA = accuracy, UA = mean per-class recall, F1 = macro-F1, wF1 = support-weighted F1 (%); "
            "s/fold = wall seconds per fold. Baselines (audio-svm, text-tfidf) ran on the same folds. "
            "<i>UA pooled</i>: UA of all test predictions together, with its 95 % interval from a bootstrap over "
            "test speakers, then their utterances.</p>"
            "<table><tr><th>model</th><th>WA</th><th>UA</th><th>macro-F1</th><th>wF1</th><th>UA pooled [95 %]</th>"
            "<th>s/fold</th></tr>"]
    for r in runs:
        s = r.summary
        cells = "".join(f"<td>{100 * s[k]['mean']:.1f} ± {100 * s[k]['std']:.1f}</td>" if k in s else "<td></td>"
                        for k in ("wa", "ua", "f1", "wf1"))
        iv = (s.get("intervals") or {}).get("ua")
        cells += (f"<td>{100 * iv['value']:.1f} [{100 * iv['low']:.1f}, {100 * iv['high']:.1f}]</td>" if iv
                  else "<td></td>")
        sec = s.get("seconds_per_fold", {}).get("mean")
        rows.append(f"<tr><td>{html.escape(r.name)}</td>{cells}<td>{'' if sec is None else f'{sec:.1f}'}</td></tr>")
    rows.append("</table><h3>Per fold</h3><table><tr><th>model</th><th>test</th><th>n</th><th>WA</th><th>UA</th>"
                "<th>F1</th><th>best epoch</th></tr>")
    for r in runs:
        for f in r.summary["folds"]:
            rows.append(f"<tr><td>{html.escape(r.name)}</td><td>{html.escape(str(f['test']))}</td>"
                        f"<td>{f.get('n_test', '')}</td><td>{100 * f['wa']:.1f}</td><td>{100 * f['ua']:.1f}</td>"
                        f"<td>{100 * f['f1']:.1f}</td><td>{f.get('best_epoch', '')}</td></tr>")
    rows.append("</table></section>")
    return "".join(rows)


def _against_baseline(runs: list[Run]) -> str:
    """Each run minus the best baseline on the same test utterances (`mmfer compare`'s paired bootstrap)."""
    from mmfer.analysis.compare import NAMES, against_baseline

    found = against_baseline(runs)
    if found is None:
        return ""
    best, rows = found
    head = "".join(f"<th>{NAMES[m]}</th>" for m in ("wa", "ua", "f1", "wf1"))
    parts = [f"<section id='versus-baseline'><h2>Against the best baseline</h2><p>Difference from <b>"
             f"{html.escape(best)}</b> (percentage points) with its 95 % interval: a paired bootstrap of test "
             "speakers, then their utterances (both runs on the same resamples); p: two-sided, bootstrap; McNemar "
             "on utterance correctness. <code>mmfer compare RUN BASELINE</code> gives the full comparison.</p>"
             f"<table><tr><th>model</th>{head}<th>p (UA)</th><th>McNemar p</th></tr>"]
    for r in rows:
        cells = "".join(f"<td>{100 * r['metrics'][m]['diff']:+.1f} [{100 * r['metrics'][m]['low']:+.1f}, "
                        f"{100 * r['metrics'][m]['high']:+.1f}]</td>" for m in ("wa", "ua", "f1", "wf1"))
        parts.append(f"<tr><td>{html.escape(r['a'])}</td>{cells}<td>{r['metrics']['ua']['p']:.3f}</td>"
                     f"<td>{r['mcnemar']['p']:.3f}</td></tr>")
    parts.append("</table></section>")
    return "".join(parts)


def _confusions(runs: list[Run]) -> str:
    parts = ["<section id='confusion'><h2>Confusion matrices and per-class recall</h2><div class='grid'>"]
    recalls = {}
    for r in runs:
        m = np.asarray(r.summary["confusion"], float)
        recalls[r.name] = (np.diag(m) / np.maximum(m.sum(1), 1)).tolist()
        parts.append(_img(plots.confusion_matrix(m, r.classes, f"{r.name} (pooled over folds)"),
                          f"confusion matrix {r.name}"))
    parts.append("</div>")
    parts.append(_img(plots.recall_bars(recalls, runs[0].classes), "per-class recall"))
    parts.append("</section>")
    return "".join(parts)


def _gate(runs: list[Run]) -> str:
    parts = ["<section id='gate'><h2>Modality gate</h2>"]
    gated = [r for r in runs if r.predictions["gate"].notna().any()]
    if not gated:
        parts.append("<p class='muted'>No GMU model among these runs: no gate to show.</p>")
    for r in gated:
        p = r.predictions
        parts.append(f"<p>{r.name}: z is the share of the acoustic branch in the fused vector (mean over units); "
                     f"above 0.5 the voice leads, below the words.</p>")
        parts.append(_img(plots.gate_distribution(p["gate"], p["true"].tolist(), p["true"] == p["pred"], r.classes),
                          f"gate distribution {r.name}"))
    parts.append("</section>")
    return "".join(parts)


def _examples(runs: list[Run], table: pd.DataFrame | None, n: int) -> str:
    run = next((r for r in runs if r.predictions["gate"].notna().any()), runs[-1])
    parts = [f"<section id='examples'><h2>What the model attended to ({run.name})</h2>"]
    for title, row in pick_examples(run.predictions, run.classes)[:n]:
        meta = table.loc[row["utt_id"]] if table is not None and row["utt_id"] in table.index else None
        gate = "" if pd.isna(row["gate"]) else f" · acoustic gate {row['gate']:.2f}"
        parts.append(f"<div class='card'><b>{html.escape(title)}</b>: {row['utt_id']} · true <b>{row['true']}</b> · "
                     f"predicted <b>{row['pred']}</b>{gate}")
        if meta is not None:
            parts.append(f"<p>“{html.escape(meta['text'])}”</p>")
        parts.append("<div class='grid'>")
        parts.append(_img(plots.probabilities(row["probs"], run.classes, "probabilities"), "probabilities"))
        attended = [s for s in STREAMS.values() if s.attention_column and row.get(s.attention_column) is not None]
        for s in attended:
            if s.modality == "text" and meta is not None:
                parts.append(_img(plots.word_attention(list(meta["words"]), row[s.attention_column],
                                                       "word attention"), "word attention"))
        parts.append("</div>")
        for s in attended:
            if s.modality == "audio" and s.name in run.steps:
                signal, sr, words, starts, ends = None, SAMPLE_RATE, None, None, None
                if meta is not None:
                    signal, sr = _read_audio(meta["audio"])
                    if meta["word_start"] is not None:
                        words, starts, ends = list(meta["words"]), list(meta["word_start"]), list(meta["word_end"])
                offset = frame_offset(run.provenance.get("features", {}).get(s.name, {}), signal, sr)
                parts.append(_img(plots.frame_attention(signal, sr, row[s.attention_column], run.steps[s.name], words,
                                                        starts, ends, "frame attention over the waveform",
                                                        offset=offset), "frame attention"))
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _read_audio(path: str):
    import soundfile as sf

    try:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        return x.mean(axis=1), sr
    except Exception:  # noqa: BLE001 - a missing wav only costs the waveform, not the report
        return None, SAMPLE_RATE


def _curves(runs: list[Run]) -> str:
    parts = ["<section id='curves'><h2>Learning curves</h2>"]
    for r in runs:
        if not all("history" in f for f in r.folds):  # linear baselines: fitted in closed form, no epochs
            parts.append(f"<p class='muted'>{html.escape(r.name)}: fitted in closed form (C chosen on the "
                         "validation speakers), no learning curve.</p>")
            continue
        parts.append(_img(plots.learning_curves({f["fold"]: f["history"] for f in r.folds}, r.name),
                          f"learning curves {r.name}"))
    parts.append("</section>")
    return "".join(parts)
