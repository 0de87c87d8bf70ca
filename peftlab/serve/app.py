"""The FastAPI app of `peftlab serve`: OpenAI's routes and vLLM's adapter routes in one module-level APIRouter reading
`app.state`, every error as OpenAI's error object."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, AsyncIterator

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from peftlab.errors import PeftlabError
from peftlab.serve import completions
from peftlab.serve.completions import LoopEvents
from peftlab.serve.jobs import Busy, Job
from peftlab.serve.limits import Limits
from peftlab.serve.openai_api import (ApiError, ChatBody, CompletionBody, LoadAdapterBody, ModelCard, ModelList, UnloadAdapterBody,
                                      parse_body)

log = logging.getLogger(__name__)


def json_response(data: BaseModel | dict[str, Any], status: int = 200) -> Response:
    body = data.model_dump_json() if isinstance(data, BaseModel) else json.dumps(data)
    return Response(body, status, media_type="application/json")


def served_names(engine: Any) -> str:
    return ", ".join(list(engine.models))


def error_response(error: ApiError) -> Response:
    return Response(error.payload(), error.status, media_type="application/json")


router = APIRouter()  # every route; each reads the engine, scheduler and limits from app.state, as vLLM's entrypoints do


def build_app(engine: Any, scheduler: Any, limits: Limits) -> FastAPI:
    """The app; the API key and body limits are checked before its routes, by guard.Guard around it."""
    app = FastAPI(title="peftlab serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.scheduler, app.state.limits, app.state.started = engine, scheduler, limits, int(time.time())
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _no_route)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _bug)
    app.include_router(router)
    return app


async def _api_error(request: Request, error: ApiError) -> Response:
    return error_response(error)


async def _no_route(request: Request, error: HTTPException) -> Response:
    path = request.url.path
    if error.status_code == 405:
        return error_response(ApiError(405, f"{path} does not take {request.method}", None, "method_not_allowed"))
    return error_response(ApiError(error.status_code, f"no route {path}; try /v1/models, /v1/completions, /v1/chat/completions "
                                   "or /health", None, "not_found"))


async def _bug(request: Request, error: Exception) -> Response:  # not the client's fault: say so, keep serving
    log.error("request %s %s failed", request.method, request.url.path, exc_info=error)
    return error_response(ApiError(500, f"internal error: {type(error).__name__}", None, "internal_error", "server_error"))


@router.get("/health")
async def health() -> Response:
    return json_response({"status": "ok"})


@router.get("/v1/models")
async def models(request: Request) -> Response:
    engine, started = request.app.state.engine, request.app.state.started
    cards = [ModelCard(id=name, created=started, root=engine.base_name, parent=None if name == engine.base_name else engine.base_name,
                       peftlab={"method": served.method} if served.method else None)
             for name, served in list(engine.models.items())]  # a copy: adapters come and go on other threads
    return json_response(ModelList(data=cards))


@router.post("/v1/chat/completions")
async def chat(request: Request) -> Response:
    return await _generate(request, parse_body(await request.body(), ChatBody))


@router.post("/v1/completions")
async def complete(request: Request) -> Response:
    return await _generate(request, parse_body(await request.body(), CompletionBody))


@router.post("/v1/load_lora_adapter")
async def load_adapter(request: Request) -> Response:
    body = parse_body(await request.body(), LoadAdapterBody)
    try:
        await asyncio.wrap_future(request.app.state.scheduler.adapters.load(body.lora_name, body.lora_path))
    except PeftlabError as error:
        param = "lora_name" if "adapter name" in str(error) else "lora_path"
        raise ApiError(400, str(error), param, "invalid_adapter") from None
    except Busy as busy:
        raise _busy(busy) from None
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")


@router.post("/v1/unload_lora_adapter")
async def unload_adapter(request: Request) -> Response:
    body = parse_body(await request.body(), UnloadAdapterBody)
    try:
        await asyncio.wrap_future(request.app.state.scheduler.adapters.unload(body.lora_name))
    except KeyError:
        raise ApiError(404, f"no adapter named '{body.lora_name}' is served; served here: {served_names(request.app.state.engine)}",
                       "lora_name", "model_not_found") from None
    except PeftlabError as error:
        raise ApiError(400, str(error), "lora_name", "invalid_adapter") from None
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")


def _busy(busy: Busy) -> ApiError:
    return ApiError(429, f"server busy: {busy}; retry shortly", None, "rate_limit_exceeded", "rate_limit_error")


async def _generate(request: Request, body: ChatBody | CompletionBody) -> Response:
    state = request.app.state
    engine, scheduler, limits = state.engine, state.scheduler, state.limits
    for last_try in (False, True):  # an adapter evicted between ready() and submit() is loaded again, once
        await _model_ready(scheduler, engine, body.model)
        checked = completions.check_request(body, engine, limits)
        events = LoopEvents(asyncio.get_running_loop())
        jobs = completions.make_jobs(checked, engine.loaded.tokenizer, events, engine.loaded.model.device)
        try:
            scheduler.submit(jobs)
            break
        except KeyError:
            if last_try:
                raise ApiError(404, f"the model '{body.model}' was unloaded while this request waited; load it again",
                               "model", "model_not_found") from None
        except Busy as busy:
            raise _busy(busy) from None
    answers = completions.job_events(jobs, events, limits.wait_seconds)
    if checked.stream:
        # the background task also covers a client gone before the stream's first step (the generator never started)
        return StreamingResponse(_sse(completions.stream(checked, answers), jobs), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"}, background=BackgroundTask(_cancel_after_stream, jobs))
    try:
        result = await _unless_client_leaves(completions.answer(checked, answers), request)
    finally:
        _cancel(jobs)
    if result is None:  # never delivered: uvicorn drops what is sent to a closed connection
        return error_response(ApiError(400, "the client disconnected before the answer was ready", None, "client_disconnected"))
    return json_response(result)


async def _model_ready(scheduler: Any, engine: Any, model: str) -> None:
    """Waits while an adapter named by a request is loaded on demand; 404 for a name neither served nor loadable."""
    try:
        loading = scheduler.ready(model)
        if loading is not None:
            await asyncio.wrap_future(loading)
    except KeyError:
        raise ApiError(404, f"The model '{model}' does not exist; served here: {served_names(engine)}", "model",
                       "model_not_found") from None
    except PeftlabError as error:
        raise ApiError(400, str(error), "model", "invalid_adapter") from None
    except Busy as busy:  # every --max-adapters place is in use by a request
        raise _busy(busy) from None


async def _cancel_after_stream(jobs: list[Job]) -> None:
    """A coroutine, so Starlette runs it on the loop: a plain function would take a worker thread per stream."""
    _cancel(jobs)


def _cancel(jobs: list[Job]) -> None:
    for job in jobs:
        job.cancelled = True  # finished jobs ignore it; a departed client's jobs stop at the next decoding step


async def _unless_client_leaves(work: Any, request: Request) -> Any:
    """`work`'s result, or None as soon as the client disconnects while it runs (the caller then cancels the jobs)."""
    task, left = asyncio.ensure_future(work), asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, left}, return_when=asyncio.FIRST_COMPLETED)
        return task.result() if task.done() else None
    finally:
        for pending in (task, left):
            pending.cancel()


async def _disconnected(request: Request) -> None:
    # the body is read: the next ASGI message is http.disconnect, whenever the client closes
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _sse(chunks: AsyncIterator[BaseModel | dict[str, Any]], jobs: list[Job]) -> AsyncIterator[bytes]:
    """Server-sent events; Starlette cancels this on disconnect, and the finally stops the jobs."""
    try:
        try:
            async for chunk in chunks:
                data = chunk.model_dump_json() if isinstance(chunk, BaseModel) else json.dumps(chunk)
                yield f"data: {data}\n\n".encode()
        except ApiError as error:  # the headers are out: the error travels as the last event
            yield b"data: " + error.payload() + b"\n\n"
        yield b"data: [DONE]\n\n"
    finally:
        _cancel(jobs)
