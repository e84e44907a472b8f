"""The local web demo: FastAPI app with one prediction endpoint and one page."""

from __future__ import annotations

import asyncio
import base64
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, File, Form, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmfer.errors import MmferError, NoSpeech
from mmfer.features.audio import SAMPLE_RATE

MAX_DECODES = 2  # uploads decoded and analysed at once; the predictor's engines run one at a time anyway
DECODE_WAIT = 30.0  # seconds an upload waits for its turn before 503
ACCEPTED = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg"}


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
        timing = "no words"
        if words:
            timing = ("word times from recognition" if all(w.get("timing") in ("recognised", "substituted")
                                                            for w in words) else "word positions approximate")
            names = [w["word"] for w in words]
            starts = [w["start"] for w in words]
            ends = [w["end"] for w in words]
        out["frame_attention"] = _png(plots.frame_attention(
            signal, SAMPLE_RATE, result["frames"]["attention"], result["frames"]["seconds_per_step"], names, starts,
            ends, f"frame attention over the waveform ({timing})", offset=result["frames"]["offset_seconds"]))
    if words:
        out["word_attention"] = _png(plots.word_attention([w["word"] for w in words],
                                                          [w["attention"] for w in words], "word attention"))
    return out


FORM_OVERHEAD = 64_000  # multipart boundaries and the text fields beside the audio
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
                               "'unsafe-inline'; img-src 'self' data: blob:; media-src 'self' blob:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
}


def _secure(response: Response) -> Response:
    """Every answer: no framing (clickjacking), no type sniffing, only this server's own resources."""
    response.headers.update(SECURITY_HEADERS)
    return response


def _origin_host(origin: str) -> str:
    """The host of an Origin header ('http://127.0.0.1:8000' -> '127.0.0.1'); 'null' and junk -> ''."""
    from urllib.parse import urlsplit

    try:
        return (urlsplit(origin).hostname or "").lower()
    except ValueError:
        return ""


def warm_up(pred) -> str | None:
    """One prediction on a built-in short signal: a model folder whose features no longer match its
    weights fails here, at start, instead of on every request. None = fine, else the reason."""
    import numpy as np

    t = np.arange(int(SAMPLE_RATE * 1.0)) / SAMPLE_RATE
    signal = (0.1 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    try:
        pred.predict(signal, "hello there" if pred.needs_text else None)
    except Exception as err:  # noqa: BLE001 - reported in /healthz, the server stays up to say so
        return f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    return None


def create_app(model: str | Path, max_bytes: int = 10_000_000, max_seconds: float = 60.0,
               allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1"),
               lexical: str | Path | None = None, acoustic: str | Path | None = None, asr: str | None = "auto",
               language: str | None = None,
               max_utterance: float = 20.0, seed: int | None = None, max_decodes: int = MAX_DECODES,
               decode_wait: float = DECODE_WAIT) -> FastAPI:
    """The demo app. ``allowed_hosts``: Host header values answered (against DNS rebinding); ``lexical``:
    a text encoder folder the user vouches for (see Predictor); ``asr``: the recogniser that fills in a
    missing transcript (speech.asr.recogniser; 'none' = off); an upload longer than ``max_utterance``
    seconds is cut into segments and shown as a timeline; at most ``max_decodes`` uploads are decoded and
    analysed at once (each holds its signal): another waits up to ``decode_wait`` seconds for a turn, then
    gets 503 and a retry hint."""
    from mmfer.serve.predictor import Predictor, resolve_model_dir
    from mmfer.speech.asr import recogniser

    model = Path(model)
    predictors: dict[str, Predictor] = {}
    loaded: dict[Path, Predictor] = {}  # a single run serves both roles: load it once
    unusable: list[str] = []  # why a model found could not be loaded (said if none can)
    for role, with_text in (("text", True), ("audio", False)):
        try:
            folder = resolve_model_dir(model, with_text=with_text)
            if folder not in loaded:
                loaded[folder] = Predictor(folder, lexical=lexical, acoustic=acoustic, seed=seed)
        except MmferError as err:
            unusable.append(str(err))
            continue
        predictors[role] = loaded[folder]
    if not predictors:
        raise MmferError(unusable[0] if unusable else f"no trained model in {model}")
    main = predictors.get("text") or predictors["audio"]
    rec = recogniser(asr, language=language) if "text" in predictors else None
    problems = {p.name: err for p in loaded.values() if (err := warm_up(p))}
    page = resources.files("mmfer.serve").joinpath("static/index.html").read_text()
    app = FastAPI(title="mmfer demo", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None)
    hosts = {h.strip("[]").lower() for h in allowed_hosts}
    app.state.decodes = threading.BoundedSemaphore(max_decodes)

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        host = (request.headers.get("host") or "").lower()
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.find("]")]
        if name not in hosts:
            return JSONResponse({"error": f"unknown host {name!r}: this server answers only {sorted(hosts)}"},
                                status_code=421)
        if request.method == "OPTIONS":
            return _secure(Response(status_code=204, headers={"Allow": "GET, HEAD, POST, OPTIONS"}))
        if request.method == "POST":
            origin = request.headers.get("origin")
            if origin is not None and _origin_host(origin) not in hosts:
                return _secure(JSONResponse({"error": "cross-origin requests are refused: use the page this server "
                                                      "serves"}, status_code=403))
            length = request.headers.get("content-length", "")
            if "transfer-encoding" in request.headers:  # with a Content-Length too, the length could lie
                return _secure(JSONResponse({"error": "send the upload with a Content-Length and no "
                                                      "Transfer-Encoding"}, status_code=400 if length else 411))
            if not length.isdigit():
                return _secure(JSONResponse({"error": "send the upload with a Content-Length"}, status_code=411))
            if int(length) > max_bytes + FORM_OVERHEAD:
                return _secure(JSONResponse({"error": f"upload larger than {max_bytes / 1e6:.1f} MB"},
                                            status_code=413))
        return _secure(await call_next(request))

    @app.exception_handler(BadInput)
    async def _bad(_, exc: BadInput):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse({"error": f"{where or 'request'}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def _crash(_, exc: Exception):
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    def healthz() -> JSONResponse:
        gone = [p.name for p in loaded.values() if not _still_there(p)]
        if gone:
            return JSONResponse({"status": "error", "model": main.name, "problems": {
                name: "the model folder is gone (deleted or moved since the server started): restart the server "
                      "with the model's new place" for name in gone}}, status_code=503)
        body = {"status": "error" if problems else "ok", **main.describe(), "path": None,
                "audio_only_available": "audio" in predictors and not predictors["audio"].needs_text,
                "recognition": rec.settings()["model"] if rec is not None else None,
                "max_utterance_seconds": max_utterance}
        if problems:
            body["problems"] = problems
        return JSONResponse(body, status_code=503 if problems else 200)

    @app.post("/api/predict")
    async def predict(audio: UploadFile = File(...), text: str = Form(""), context: str = Form("")) -> dict:
        """``context``: the preceding utterances of the conversation, one per line (oldest first)."""
        suffix = Path(audio.filename or "").suffix.lower()
        if suffix not in ACCEPTED:
            raise BadInput(415, f"unsupported audio type {suffix or '(none)'!r}: send {', '.join(ACCEPTED)}")
        pred = predictors.get("text") if text.strip() or rec is not None else predictors.get("audio")
        if pred is None or (pred.needs_text and not text.strip() and rec is None):
            raise BadInput(422, "this model needs the transcript: fill in the transcript field")
        previous = [line for line in context.splitlines() if line.strip()] or None
        # the slot first, the bytes after: a waiting upload stays in Starlette's spooled temp file (on disk
        # past 1 MB), so a queue of uploads costs disk for as long as they wait, not memory
        if not await _turn(app.state.decodes, decode_wait):
            raise BadInput(503, f"the server is analysing {max_decodes} upload(s) already: try again in a moment")
        try:
            data = await audio.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise BadInput(413, f"upload larger than {max_bytes / 1e6:.1f} MB")
            if not data:
                raise BadInput(400, "empty upload")
            return await run_in_threadpool(_analyse, pred, rec, data, suffix, text, previous, max_seconds,
                                           max_utterance)
        except MmferError as err:
            raise BadInput(422, str(err)) from None
        finally:
            app.state.decodes.release()

    return app


async def _turn(slots: threading.BoundedSemaphore, wait: float) -> bool:
    """A decode slot within ``wait`` seconds, waited for on the event loop (a waiting upload holds no
    worker thread: a flood of uploads queues here, not in the thread pool)."""
    deadline = time.monotonic() + wait
    while not slots.acquire(blocking=False):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _still_there(pred) -> bool:
    """The model folder a predictor was loaded from still holds its checkpoints."""
    from mmfer import runs

    try:
        return bool(runs.checkpoints(pred.path))
    except MmferError:
        return False


def _analyse(pred, rec, data: bytes, suffix: str, text: str, previous: list[str] | None, max_seconds: float,
             max_utterance: float) -> dict:
    """One upload, in a private temp folder (header checked before decoding; see load_audio): a short one
    is one utterance; a long one is cut into segments, each predicted with the ones before as context,
    and drawn as a timeline."""
    from mmfer.features.audio import AudioError, audio_header, load_audio
    from mmfer.serve.batch import BatchPredictor
    from mmfer.serve.inputs import Item, Unit, units_of

    batch = BatchPredictor(pred, rec if pred.needs_text else None, max_utterance=max_utterance)
    with tempfile.TemporaryDirectory(prefix="mmfer-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            info = audio_header(path)
            seconds = info.frames / info.samplerate
            if seconds > max_seconds:
                raise AudioError(f"audio longer than {max_seconds:g} s ({seconds:.1f} s), this server's limit")
            if seconds <= max_utterance:
                signal = load_audio(path, max_seconds=max_seconds)
                _, result = batch.predict_unit(Unit(0.0, len(signal) / SAMPLE_RATE, signal, text.strip() or None),
                                               list(previous or []))
                result["images"] = pictures(result, signal)
                return result
            context, rows, segments = list(previous or []), [], []
            for unit in units_of(Item(str(path), "upload"), max_utterance, 1.0, 15.0):
                try:
                    row, result = batch.predict_unit(unit, context)
                except MmferError as err:
                    segments.append({"start": unit.start, "end": unit.end, "error": str(err)})
                    continue
                result["images"] = pictures(result, unit.signal)
                segments.append(result)
                rows.append({**row, "start": unit.start, "end": unit.end})
            if not rows:
                raise NoSpeech(NoSpeech.NONE_IN_RECORDING)
            from mmfer.analysis.timeline import timeline

            return {"segments": segments, "duration": seconds,
                    "timeline": _png(timeline(path, rows, pred.classes, title="the upload's timeline"))}
        except AudioError as err:
            reason = err.reason.replace(str(path), f"the upload ({suffix})").replace(tmp, "")  # no server paths
            status = 413 if "longer than" in reason else 422
            raise BadInput(status, f"cannot use this audio: {reason}") from None
