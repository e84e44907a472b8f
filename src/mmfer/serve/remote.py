"""Batch prediction on an executor (Ray): groups of inputs as units of work, a conversation never split,
the driver journalling and ordering the rows exactly as the local loop does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmfer.serve.batch import BatchPredictor
from mmfer.serve.inputs import MAX_UTTERANCE, Item
from mmfer.serve.rows import earlier_context, output_lock, resume


@dataclass(frozen=True)
class PredictorSpec:
    """What another process needs to build the same BatchPredictor: the model folder and fold, the encoder
    folders the user named, recognition (``asr`` None: off) and segmentation."""

    model_dir: str
    fold: int | None = None
    seed: int | None = None
    lexical: str | None = None
    acoustic: str | None = None
    asr: str | None = None
    language: str | None = None
    max_utterance: float = MAX_UTTERANCE
    whisper_precision: str = "auto"

    def build(self) -> BatchPredictor:
        from mmfer.serve.predictor import Predictor
        from mmfer.speech.asr import recogniser

        pred = Predictor(Path(self.model_dir), fold=self.fold, lexical=self.lexical, acoustic=self.acoustic,
                         seed=self.seed, whisper_precision=self.whisper_precision)
        rec = recogniser(self.asr, language=self.language) if self.asr and pred.needs_text else None
        return BatchPredictor(pred, rec, language=self.language, max_utterance=self.max_utterance, read_ahead=False)


_BUILT: dict[PredictorSpec, BatchPredictor] = {}


def predict_group(spec: PredictorSpec, items: list[Item], stats: dict,
                  done_before: dict[str, list[str]] | None = None) -> list[dict]:
    """An executor's unit of work: the rows of a group of inputs, by a BatchPredictor built once per process
    (``done_before``: the conversation context of inputs done in an earlier run, see earlier_context)."""
    if spec not in _BUILT:
        _BUILT[spec] = spec.build()
    return _BUILT[spec].run(items, None, progress=False, stats=stats, done_before=done_before or {})


def groups_of(items: list[Item]) -> list[list[int]]:
    """Input positions grouped so that a conversation (manifest ``dialogue``) stays in one group, in order."""
    groups: list[list[int]] = []
    where: dict[str, int] = {}
    for i, it in enumerate(items):
        if it.dialogue:
            if it.dialogue not in where:
                where[it.dialogue] = len(groups)
                groups.append([])
            groups[where[it.dialogue]].append(i)
        else:
            groups.append([i])
    return groups


def run_on(executor, batch: BatchPredictor, spec: PredictorSpec, items: list[Item], out: Path | None,
           echo: Callable[[str], None] = print, progress: bool = True) -> list[dict]:
    """BatchPredictor.run with groups of inputs as units of work on ``executor``: the same rows (journalled,
    resumable), in input order. Speaker statistics are computed here, once, for every group."""

    with output_lock(out):
        return _run_on(executor, batch, spec, items, out, echo, progress)


def _run_on(executor, batch: BatchPredictor, spec: PredictorSpec, items: list[Item], out: Path | None, echo,
            progress: bool) -> list[dict]:
    from tqdm import tqdm

    journal, todo = resume(items, out, echo)
    stats = batch.speaker_stats(items, progress)
    before = earlier_context(items, todo, journal.rows if journal is not None else [])
    size = max(1, min(64, -(-len(todo) // (4 * executor.cpus()))))
    chunks: list[list[int]] = []
    for g in groups_of(todo):
        if not chunks or len(chunks[-1]) >= size:
            chunks.append([])
        chunks[-1].extend(g)
    rows: list[dict] = []
    bar = tqdm(total=len(todo), desc="predict", unit="file", disable=not progress)
    jobs = [(spec, [todo[j] for j in c], stats, {todo[j].key: before[todo[j].key] for j in c if todo[j].key in before})
            for c in chunks]
    for i, got in executor.map(predict_group, jobs):
        if journal is not None:
            journal.add(got)
        rows += got
        bar.update(len(chunks[i]))
    bar.close()
    order = {it.key: i for i, it in enumerate(items)}
    if journal is None:
        return sorted(rows, key=lambda r: order.get(r["key"], len(order)))
    journal.rows.sort(key=lambda r: order.get(r["key"], len(order)))
    journal.finish(batch.pred.classes, echo)
    return journal.rows
