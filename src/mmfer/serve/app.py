"""The local web demo: FastAPI app with one prediction endpoint and one page."""

from __future__ import annotations

import base64
import contextlib
import tempfile
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from mmfer.errors import MmferError
from mmfer.features.audio import SAMPLE_RATE

ACCEPTED = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg"}


class BadInput(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _png(fig) -> str:
    from mmfer.analysis.plots import to_png

    return "data:image/png;base64," + base64.b64encode(to_png(fig)).decode()


def pictures(result: dict, signal) -> dict:
    """The report's own plot functions, for the page."""
    from mmfer.analysis import plots

    out = {}
    words = result.get("words")
    if "frames" in result:
        names = starts = ends = None
        if words:
            names = [w["word"] for w in words]
            starts = [w["start"] for w in words]
            ends = [w["end"] for w in words]
        out["frame_attention"] = _png(plots.frame_attention(
            signal, SAMPLE_RATE, result["frames"]["attention"], result["frames"]["seconds_per_step"], names, starts,
            ends, "frame attention over the waveform (word positions approximate)"))
    if words:
        out["word_attention"] = _png(plots.word_attention([w["word"] for w in words],
                                                          [w["attention"] for w in words], "word attention"))
    return out


def create_app(model: str | Path, max_bytes: int = 10_000_000, max_seconds: float = 60.0) -> FastAPI:
    from mmfer.serve.predictor import Predictor, resolve_model_dir

    model = Path(model)
    predictors: dict[str, Predictor] = {}
    loaded: dict[Path, Predictor] = {}  # a single run serves both roles: load it once
    for role, with_text in (("text", True), ("audio", False)):
        with contextlib.suppress(MmferError):
            folder = resolve_model_dir(model, with_text=with_text)
            if folder not in loaded:
                loaded[folder] = Predictor(folder)
            predictors[role] = loaded[folder]
    if not predictors:
        raise MmferError(f"no trained model in {model}")
    main = predictors.get("text") or predictors["audio"]
    page = resources.files("mmfer.serve").joinpath("static/index.html").read_text()
    app = FastAPI(title="mmfer demo", version="0.1.0")

    @app.exception_handler(BadInput)
    async def _bad(_, exc: BadInput):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", **main.describe(), "path": None,
                "audio_only_available": "audio" in predictors and not predictors["audio"].needs_text}

    @app.post("/api/predict")
    async def predict(audio: UploadFile = File(...), text: str = Form("")) -> dict:
        from mmfer.features.audio import AudioError, load_audio

        suffix = Path(audio.filename or "").suffix.lower()
        if suffix not in ACCEPTED:
            raise BadInput(415, f"unsupported audio type {suffix or '(none)'!r}: send {', '.join(ACCEPTED)}")
        data = await audio.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise BadInput(413, f"upload larger than {max_bytes / 1e6:.1f} MB")
        if not data:
            raise BadInput(400, "empty upload")
        pred = predictors.get("text") if text.strip() else predictors.get("audio")
        if pred is None or (pred.needs_text and not text.strip()):
            raise BadInput(422, "this model needs the transcript: fill in the transcript field")
        with tempfile.TemporaryDirectory(prefix="mmfer-") as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                signal = load_audio(path)
            except AudioError as err:
                raise BadInput(422, f"cannot use this audio: {err.reason}") from None
        if len(signal) / SAMPLE_RATE > max_seconds:
            raise BadInput(413, f"audio longer than {max_seconds:.0f} s")
        try:
            result = await run_in_threadpool(pred.predict, signal, text or None)
        except MmferError as err:
            raise BadInput(422, str(err)) from None
        result["images"] = await run_in_threadpool(pictures, result, signal)
        return result

    return app
