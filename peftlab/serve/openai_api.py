"""OpenAI's API shapes as pydantic models: request bodies checked at the edge, answers, and the error object."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

Body = TypeVar("Body", bound=BaseModel)


class ApiError(Exception):
    """An error answered with an OpenAI-style body: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def payload(self) -> bytes:
        # ASCII-escaped JSON: a message quoting a client's text can never fail to encode
        return json.dumps(self.body()).encode()


# --- what a string field must hold --------------------------------------------------------------------

def _utf8(text: str) -> str:
    """JSON's \\ud800 escapes decode to lone surrogates, which no tokenizer or UTF-8 answer can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise PydanticCustomError("invalid_text", "holds a lone surrogate (\\u{code}) at character {at}; send valid Unicode text",
                                  {"code": f"{ord(text[error.start]):04x}", "at": error.start}) from None
    return text


Text = Annotated[str, AfterValidator(_utf8)]


def _listed(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _text_parts(value: Any) -> Any:
    """The content-parts form of a message ([{"type": "text", "text": ...}, ...]): its text parts, joined."""
    if not isinstance(value, list):
        return value
    texts = [part.get("text") for part in value if isinstance(part, dict) and part.get("type") == "text"]
    if not all(isinstance(text, str) for text in texts):
        raise PydanticCustomError("invalid_type", "text parts need a string 'text'")
    return "".join(texts)


def _refused(value: Any, info: Any) -> Any:
    if value not in (None, False, 0, []):
        raise PydanticCustomError("unsupported_parameter", "'{name}' is not supported by peftlab serve; leave it out",
                                  {"name": info.field_name})
    return None


def _refused_if_sent(value: Any, info: Any) -> Any:
    """Fields whose every value asks for something this server does not do (logprobs: 0 still asks for the chosen
    token's logprob; response_format {"type": "text"} is the only no-op, and is let through)."""
    if not (value is None or value is False or value == {"type": "text"}):  # `is`: 0 == False, and 0 is a request
        raise PydanticCustomError("unsupported_parameter", "'{name}' is not supported by peftlab serve; leave it out",
                                 {"name": info.field_name})
    return None


def _one_choice(value: int) -> int:
    if value != 1:
        raise PydanticCustomError("unsupported_value", "only n=1 is supported; send several requests instead")
    return value


Refused = Annotated[Any, AfterValidator(_refused)]
RefusedIfSent = Annotated[Any, AfterValidator(_refused_if_sent)]
Prompts = Annotated[list[Text], BeforeValidator(_listed), Field(min_length=1)]
StopStrings = Annotated[list[Text], BeforeValidator(_listed)]


# --- requests ------------------------------------------------------------------------------------------

class Strict(BaseModel):
    # wrong types are refused, not coerced ("0.5" is no temperature); unknown fields are ignored, as OpenAI clients send many
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(Strict):
    include_usage: bool = False


class Message(Strict):
    role: Literal["system", "user", "assistant", "developer"]
    content: Annotated[Text, BeforeValidator(_text_parts)]


class GenerationBody(Strict):
    """The fields both routes share; the server's limits (max_tokens, prompts, stop strings) are checked after parsing."""

    model: Text
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = Field(0.0, ge=0, le=2)  # 0 unless asked: answers are reproducible and batching never changes them
    top_p: float = Field(1.0, gt=0, le=1)
    stop: StopStrings | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, AfterValidator(_one_choice)] = 1
    seed: int | None = Field(None, ge=-(1 << 63), le=(1 << 64) - 1)  # honoured: one generator per prompt; torch's seed range
    logprobs: RefusedIfSent = None
    top_logprobs: Refused = None
    response_format: RefusedIfSent = None
    tool_choice: RefusedIfSent = None
    functions: RefusedIfSent = None
    function_call: RefusedIfSent = None
    echo: Refused = None
    tools: Refused = None
    suffix: Refused = None


class ChatBody(GenerationBody):
    messages: list[Message] = Field(min_length=1)


class CompletionBody(GenerationBody):
    prompt: Prompts


class LoadAdapterBody(Strict):
    """vLLM's /v1/load_lora_adapter body."""

    lora_name: Text = Field(min_length=1)
    lora_path: Text = Field(min_length=1)


class UnloadAdapterBody(Strict):
    lora_name: Text = Field(min_length=1)


def parse_body(raw: bytes, shape: type[Body]) -> Body:
    """The request body as `shape`; every malformed body is an ApiError(400) naming the field."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ApiError(400, "the JSON body is nested too deeply; send a flat JSON object", None, "invalid_json") from None
    except json.JSONDecodeError as error:
        raise ApiError(400, f"We could not parse the JSON body of your request ({error}); send a JSON object", None,
                       "invalid_json") from None
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text; send JSON encoded as UTF-8", None, "invalid_json") from None
    except ValueError:  # Python refuses integers of over 4300 digits: converting them takes quadratic time
        raise ApiError(400, "a number in the JSON body has thousands of digits; send numbers of ordinary size", None,
                       "invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", None, "invalid_body")
    try:
        return shape.model_validate(data)
    except ValidationError as error:
        raise _field_error(error.errors(include_url=False, include_input=False)[0]) from None


def _field_error(problem: dict[str, Any]) -> ApiError:
    param = field_path(problem["loc"])
    kind = problem["type"]
    if kind == "missing":
        return ApiError(400, f"missing required field '{param}'", param, "missing_required_parameter")
    code = "invalid_type" if kind.endswith("_type") else "invalid_value"
    if kind in ("invalid_text", "invalid_type", "unsupported_parameter", "unsupported_value"):
        code = kind
    return ApiError(400, f"'{param}': {problem['msg']}", param, code)


def field_path(loc: tuple) -> str:
    """pydantic's ('messages', 0, 'role') as OpenAI's param 'messages[0].role'."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


# --- answers -------------------------------------------------------------------------------------------

def _omitted_if_none(default: Any = None) -> Any:
    return Field(default, exclude_if=lambda value: value is None)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str


class TextChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: str | None


class Delta(BaseModel):
    role: Literal["assistant"] | None = _omitted_if_none()
    content: str | None = _omitted_if_none()


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: None = None
    finish_reason: str | None


class Envelope(BaseModel):
    id: str
    object: str
    created: int
    model: str


class ChatCompletion(Envelope):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class ChatChunk(Envelope):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = _omitted_if_none()  # only in the last chunk, with stream_options.include_usage


class Completion(Envelope):
    """A text completion, and each chunk of a streamed one (OpenAI uses the same object for both)."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[TextChoice]
    usage: Usage | None = _omitted_if_none()


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "peftlab"
    root: str
    parent: str | None
    peftlab: dict[str, str] | None = _omitted_if_none()  # the method, not the folder: clients need not learn server paths


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
