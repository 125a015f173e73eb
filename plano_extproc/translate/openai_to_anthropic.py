"""An OpenAI chat-completions client in front of an Anthropic Messages upstream.

Request (``POST /v1/chat/completions`` body -> ``POST /v1/messages`` body):

| OpenAI                                     | Anthropic                                         |
|--------------------------------------------|---------------------------------------------------|
| ``model``                                  | ``model`` = the provider's model id               |
| ``system`` / ``developer`` messages        | top-level ``system`` (a string for one plain      |
|                                            | text, else text blocks), in order, wherever they  |
|                                            | stood in the conversation                         |
| ``user`` content: string / ``text``        | string / ``text`` blocks                          |
| ``image_url`` with a ``data:`` URL         | ``image`` with a ``base64`` source                |
| ``image_url`` with an http(s) URL          | ``image`` with a ``url`` source                   |
| ``file`` with a PDF ``file_data``          | ``document`` with a ``base64`` source             |
| ``cache_control`` on a part or a tool      | kept on the block or tool                         |
| ``assistant`` content + ``tool_calls``     | ``text`` + ``tool_use`` blocks (``arguments``     |
|                                            | JSON string -> ``input`` object)                  |
| ``assistant.thinking_blocks`` (below)      | ``thinking`` / ``redacted_thinking`` blocks first |
| ``tool`` messages (``tool_call_id``)       | ``tool_result`` blocks (``tool_use_id``) in a     |
|                                            | user turn; consecutive turns of one role are      |
|                                            | merged (Anthropic wants alternating roles), with  |
|                                            | ``tool_result`` blocks first in a user turn       |
| ``tools`` (``function``: name,             | ``tools`` (name, description, ``input_schema``)   |
| description, parameters)                   |                                                   |
| ``tool_choice`` auto / none / required /   | ``tool_choice`` auto / none / any / tool          |
| a named function                           |                                                   |
| ``parallel_tool_calls: false``             | ``tool_choice.disable_parallel_tool_use: true``   |
| ``stop`` (string or list)                  | ``stop_sequences``                                |
| ``max_completion_tokens`` / ``max_tokens`` | ``max_tokens`` (required: default below)          |
| ``temperature`` (0-2)                      | ``temperature`` clamped to 0-1                    |
| ``top_p``                                  | ``top_p`` (dropped when 1, which means "off")     |
| ``top_k`` (an extension some clients       | ``top_k``                                         |
| send)                                      |                                                   |
| ``reasoning_effort``                       | ``thinking: {type: enabled, budget_tokens}``      |
| ``user`` (else ``safety_identifier``)      | ``metadata.user_id``                              |
| ``response_format`` json_schema            | ``output_config.format`` json_schema              |
| ``stream``                                 | ``stream``                                        |

Decisions:

- ``max_tokens``: Anthropic requires it. Without ``max_completion_tokens`` / ``max_tokens``
  the request asks for ``DEFAULT_MAX_TOKENS`` (4096: within every Claude model's output
  limit), plus the thinking budget when ``reasoning_effort`` turns thinking on.
- ``temperature``: OpenAI's range is 0-2, Anthropic's 0-1; above 1 is clamped to 1 (scaling
  would change what the common 0.2-1.0 values mean).
- ``reasoning_effort`` -> a thinking budget: minimal 1024, low 2048, medium 8192, high 16384,
  xhigh 32768; ``none`` asks for no thinking. With an explicit ``max_tokens`` the budget is
  cut to fit under it, and thinking is left off when less than Anthropic's minimum of 1024
  fits. Thinking is also left off with a forced ``tool_choice`` (required / a named
  function), which Anthropic refuses to combine with thinking, and when the last assistant
  turn called tools but its ``thinking_blocks`` were not sent back (Anthropic refuses
  thinking then, as the turn's signed thinking is missing). With thinking on,
  ``temperature`` and ``top_k`` are dropped and ``top_p`` below 0.95 is dropped (Anthropic
  refuses them with thinking).
- ``n`` > 1: refused (400, param ``n``): Anthropic returns one message; answering with one
  choice where several were asked for would be a silent lie.
- ``response_format``: ``json_schema`` -> ``output_config.format`` (the upstream model must
  support structured outputs; it says so if not); ``json_object`` has no schema to give, so
  a system instruction asks for a single JSON object (a request, not a guarantee); ``text``
  is the default and dropped.
- Thinking across turns: a response's thinking comes back as ``reasoning_content`` (text)
  and ``thinking_blocks`` (the blocks with their signatures; in a stream, one delta entry
  per block when it ends, carrying an ``index``). Anthropic verifies signatures, so only
  ``thinking_blocks`` sent back on an assistant message are replayed; a bare
  ``reasoning_content`` in a request is dropped.
- Tool-call ids are reduced to Anthropic's ``[A-Za-z0-9_-]`` (other characters become
  ``_``, the same way in ``tool_use`` and ``tool_result``). A conversation that has tool
  calls but no ``tools`` gets a minimal definition of each tool it used and
  ``tool_choice: none``, since Anthropic refuses ``tool_use`` blocks for undefined tools.

Refused (400, the client's error shape): ``n`` > 1; ``input_audio`` parts; ``file`` parts
that are not inline PDFs (``file_id``); ``data:`` URLs that are not base64; legacy
``functions`` / ``function_call`` / ``function`` messages (no call ids to pair results
with); tools that are not ``function`` tools; ``tool_choice`` ``allowed_tools``; tool-call
``arguments`` that are not a JSON object; an unknown ``reasoning_effort`` or
``response_format`` type.

Dropped (no Anthropic equivalent): ``logprobs``, ``top_logprobs``, ``logit_bias``,
``frequency_penalty``, ``presence_penalty``, ``seed``, ``stream_options`` (Anthropic always
reports usage; ``include_usage`` is honoured on the way back), ``service_tier``, ``store``,
``metadata`` (OpenAI's stored-completion tags), ``prediction``, ``modalities``, ``audio``,
``web_search_options``, ``verbosity``, ``prompt_cache_key``, a message's ``name``, an
image's ``detail``, ``function.strict`` on tools, ``reasoning_content`` in requests; and
any other field not named here (only what is mapped is sent).

Response (non-streamed ``message`` -> ``chat.completion``; streamed events ->
``chat.completion.chunk``s): the upstream's ``id`` and ``model`` are kept; ``text`` blocks
-> ``content`` (joined); ``tool_use`` -> ``tool_calls`` (``input`` as a JSON string);
``thinking`` -> ``reasoning_content`` and ``thinking_blocks``; ``stop_reason`` end_turn,
stop_sequence, pause_turn -> ``stop``, max_tokens and model_context_window_exceeded ->
``length``, tool_use -> ``tool_calls``, refusal -> ``content_filter``; usage ``input_tokens``
+ ``cache_creation_input_tokens`` + ``cache_read_input_tokens`` -> ``prompt_tokens``,
``cache_read_input_tokens`` -> ``prompt_tokens_details.cached_tokens``, ``output_tokens`` ->
``completion_tokens``. Dropped: server-tool blocks (``server_tool_use``, web search
results), citations, ``stop_sequence`` (OpenAI does not say which stop matched).

Streams: the first chunk carries ``delta.role``; text, ``reasoning_content`` and tool-call
deltas follow (a call's ``id`` and ``function.name`` in its first delta, then ``arguments``
fragments); the final chunk carries ``finish_reason``; a usage chunk (``choices: []``)
follows when ``stream_options.include_usage`` was asked for; then ``data: [DONE]``. An
upstream ``error`` event becomes ``data: {"error": ...}`` (the OpenAI SDK raises it) and
ends the stream. An upstream stream that ends after ``message_delta`` but without
``message_stop`` is closed normally; one that ends earlier ends with such an error.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from . import error_shapes
from .base import (
    ANTHROPIC,
    JSON,
    OPENAI,
    EventStream,
    TranslationError,
    Translator,
    as_dict,
    as_int,
    as_list,
    as_str,
    parse_data,
)
from .sse import Event, dumps, encode, encode_json

DEFAULT_MAX_TOKENS = 4096
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
# Anthropic's smallest thinking budget.
MIN_THINKING_BUDGET = 1024
# With thinking on, Anthropic accepts top_p only from here up.
MIN_THINKING_TOP_P = 0.95
MAX_TEMPERATURE = 1.0
JSON_OBJECT_INSTRUCTION = "Respond with a single valid JSON object and nothing else."

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_TOOL_CHOICES = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}
_NOT_TOOL_ID = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class OpenAIToAnthropic(Translator):
    client_api = OPENAI
    upstream_api = ANTHROPIC

    default_max_tokens: int = DEFAULT_MAX_TOKENS
    # The ``created`` time of responses; a parameter so tests can fix it.
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def _request(self, body: Mapping[str, Any], model_id: str) -> JSON:
        _refuse_unsupported(body)
        system, messages = _conversation(body.get("messages"))
        out: JSON = {"model": model_id}
        tools = _tools(body.get("tools"))
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if not tools:
            # Anthropic refuses tool_use blocks for tools the request does not define.
            tools, choice = _tools_for_history(messages), {"type": "none"}
        if tools:
            out["tools"] = tools
            if choice is not None:
                out["tool_choice"] = choice
        max_tokens = _max_tokens(body)
        thinking = _thinking(body.get("reasoning_effort"), max_tokens, choice)
        if thinking and _unsigned_tool_turn(messages):
            thinking = None
        if max_tokens is None:
            max_tokens = self.default_max_tokens + (thinking or 0)
        out["max_tokens"] = max_tokens
        if thinking:
            out["thinking"] = {"type": "enabled", "budget_tokens": thinking}
        system.extend(_response_format(body.get("response_format"), out))
        if system:
            out["system"] = _system_value(system)
        out["messages"] = messages
        _sampling(body, out, thinking_on=bool(thinking))
        user = body.get("user", body.get("safety_identifier"))
        if isinstance(user, str) and user:
            out["metadata"] = {"user_id": user}
        if body.get("stream") is True:
            out["stream"] = True
        return out

    def is_response(self, body: object) -> TypeGuard[JSON]:
        return (
            isinstance(body, dict)
            and body.get("type") == "message"
            and isinstance(body.get("content"), list)
        )

    def _response(self, body: JSON) -> JSON:
        message = _message_from_blocks(as_list(body.get("content")))
        finish = FINISH_REASONS.get(as_str(body.get("stop_reason")), "stop")
        return {
            "id": as_str(body.get("id")),
            "object": "chat.completion",
            "created": int(self.clock()),
            "model": as_str(body.get("model")),
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
            "usage": openai_usage(as_dict(body.get("usage"))),
        }

    def _error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return error_shapes.anthropic_to_openai(status, body)

    def client_error(self, status: int, message: str, param: str | None = None) -> JSON:
        anthropic_type = error_shapes.anthropic_type_for_status(status)
        return error_shapes.openai_error(
            message, error_shapes.openai_type_for_anthropic(anthropic_type), anthropic_type, param
        )

    def stream(self, client_request: Mapping[str, Any] | None = None) -> AnthropicEventsToChunks:
        options = as_dict((client_request or {}).get("stream_options"))
        return AnthropicEventsToChunks(
            include_usage=options.get("include_usage") is True, created=int(self.clock())
        )


# --- the request ---------------------------------------------------------------------------


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError(
            "This model's API returns one choice per request; 'n' must be 1.", "n"
        )
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise TranslationError(
                f"'{legacy}' is not supported for this model; use 'tools'.", legacy
            )


def _conversation(messages: object) -> tuple[list[JSON], list[JSON]]:
    """(system blocks, alternating user/assistant turns) of OpenAI ``messages``."""
    if not isinstance(messages, list):
        raise TranslationError("'messages' must be a list.", "messages")
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError("A message must be an object.", where)
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), where))
        elif role == "user":
            _append(turns, "user", _user_content(message.get("content"), where))
        elif role == "assistant":
            _append(turns, "assistant", _assistant_content(message, where))
        elif role == "tool":
            _append(turns, "user", [_tool_result(message, where)])
        elif role == "function":
            raise TranslationError(
                "Legacy 'function' messages are not supported for this model; use tools.",
                f"{where}.role",
            )
        else:
            raise TranslationError(f"Unknown message role {role!r}.", f"{where}.role")
    return system, turns


def _append(turns: list[JSON], role: str, content: str | list[JSON]) -> None:
    """Add a turn, merged into the previous one of the same role (roles must alternate)."""
    if not content:
        return
    if not turns or turns[-1]["role"] != role:
        turns.append({"role": role, "content": content})
        return
    merged = _blocks(turns[-1]["content"]) + _blocks(content)
    if role == "user":
        # Anthropic wants a user turn's tool results before anything else in it.
        merged.sort(key=lambda block: block.get("type") != "tool_result")
    turns[-1]["content"] = merged


def _blocks(content: str | list[JSON]) -> list[JSON]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _text_blocks(content: object, where: str) -> list[JSON]:
    """System content: a string or text parts."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError("Content must be a string or a list of parts.", f"{where}.content")
    blocks = []
    for j, part in enumerate(content):
        part = as_dict(part)
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise TranslationError("Only text parts are allowed here.", f"{where}.content[{j}]")
        if part["text"]:
            blocks.append(_with_cache_control({"type": "text", "text": part["text"]}, part))
    return blocks


def _system_value(blocks: list[JSON]) -> str | list[JSON]:
    if len(blocks) == 1 and blocks[0].keys() == {"type", "text"}:
        return str(blocks[0]["text"])
    return blocks


def _user_content(content: object, where: str) -> str | list[JSON]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError("Content must be a string or a list of parts.", f"{where}.content")
    blocks = [_user_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]
    return [block for block in blocks if block is not None]


def _user_part(part: object, where: str) -> JSON | None:
    if not isinstance(part, dict):
        raise TranslationError("A content part must be an object.", where)
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise TranslationError("A text part needs a string 'text'.", where)
        return _with_cache_control({"type": "text", "text": text}, part) if text else None
    if kind == "image_url":
        return _with_cache_control(_image(part.get("image_url"), where), part)
    if kind == "file":
        return _with_cache_control(_document(as_dict(part.get("file")), where), part)
    raise TranslationError(
        f"Content parts of type {kind!r} are not supported for this model.", where
    )


def _with_cache_control(block: JSON, part: JSON) -> JSON:
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _image(image: object, where: str) -> JSON:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise TranslationError("An image part needs 'image_url.url'.", where)
    if url.startswith("data:"):
        media_type, data = _data_url(url, where)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _document(file: JSON, where: str) -> JSON:
    data = file.get("file_data")
    if not isinstance(data, str) or not data:
        raise TranslationError(
            "Only inline files ('file_data') are supported for this model, not 'file_id'.", where
        )
    media_type, data = (
        _data_url(data, where) if data.startswith("data:") else ("application/pdf", data)
    )
    if media_type != "application/pdf":
        raise TranslationError("Only PDF files are supported for this model.", where)
    block: JSON = {
        "type": "document",
        "source": {"type": "base64", "media_type": media_type, "data": data},
    }
    if isinstance(file.get("filename"), str):
        block["title"] = file["filename"]
    return block


def _data_url(url: str, where: str) -> tuple[str, str]:
    """(media type, base64 data) of ``data:<type>;base64,<data>``."""
    header, comma, data = url[len("data:") :].partition(",")
    media_type, *params = header.split(";")
    if not comma or "base64" not in params or not media_type:
        raise TranslationError("A data: URL must be 'data:<media type>;base64,<data>'.", where)
    # "image/jpg" is common and wrong; Anthropic accepts only the registered name.
    return ("image/jpeg" if media_type == "image/jpg" else media_type), data


def _assistant_content(message: JSON, where: str) -> str | list[JSON]:
    if message.get("function_call") is not None:
        raise TranslationError(
            "Legacy 'function_call' is not supported for this model; use tool_calls.",
            f"{where}.function_call",
        )
    blocks = _replayed_thinking(message.get("thinking_blocks"))
    blocks.extend(_assistant_text(message.get("content"), where))
    for j, call in enumerate(as_list(message.get("tool_calls"))):
        blocks.append(_tool_use(call, f"{where}.tool_calls[{j}]"))
    if len(blocks) == 1 and blocks[0].keys() == {"type", "text"}:
        return str(blocks[0]["text"])
    return blocks


def _replayed_thinking(value: object) -> list[JSON]:
    """A previous response's ``thinking_blocks``, as Anthropic sent them (signatures and all)."""
    blocks = []
    for block in as_list(value):
        block = as_dict(block)
        if block.get("type") == "thinking" and isinstance(block.get("signature"), str):
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": as_str(block.get("thinking")),
                    "signature": block["signature"],
                }
            )
        elif block.get("type") == "redacted_thinking" and isinstance(block.get("data"), str):
            blocks.append({"type": "redacted_thinking", "data": block["data"]})
    return blocks


def _assistant_text(content: object, where: str) -> list[JSON]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError("Content must be a string or a list of parts.", f"{where}.content")
    blocks = []
    for j, part in enumerate(content):
        part = as_dict(part)
        # An assistant's earlier refusal is what it said: replay it as text.
        text = part.get("text") if part.get("type") == "text" else part.get("refusal")
        if part.get("type") not in ("text", "refusal") or not isinstance(text, str):
            raise TranslationError(
                "Assistant content parts must be text or refusal.", f"{where}.content[{j}]"
            )
        if text:
            blocks.append({"type": "text", "text": text})
    return blocks


def _tool_use(call: object, where: str) -> JSON:
    call = as_dict(call)
    function = as_dict(call.get("function"))
    call_id, name = call.get("id"), function.get("name")
    if call.get("type", "function") != "function":
        raise TranslationError("Only function tool calls are supported for this model.", where)
    if not isinstance(call_id, str) or not isinstance(name, str) or not name:
        raise TranslationError("A tool call needs an 'id' and a 'function.name'.", where)
    return {
        "type": "tool_use",
        "id": tool_id(call_id),
        "name": name,
        "input": _arguments(function.get("arguments"), f"{where}.function.arguments"),
    }


def _arguments(arguments: object, where: str) -> JSON:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else None
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise TranslationError("Tool call arguments must be a JSON object.", where)
    return value


def tool_id(value: str) -> str:
    """A tool-call id as Anthropic accepts it (``^[a-zA-Z0-9_-]+$``)."""
    return _NOT_TOOL_ID.sub("_", value) or "_"


def _tool_result(message: JSON, where: str) -> JSON:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise TranslationError("A tool message needs a 'tool_call_id'.", f"{where}.tool_call_id")
    block: JSON = {"type": "tool_result", "tool_use_id": tool_id(call_id)}
    content = message.get("content")
    if isinstance(content, list):
        parts = [_user_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]
        content = [part for part in parts if part is not None]
    elif content is not None and not isinstance(content, str):
        raise TranslationError("Content must be a string or a list of parts.", f"{where}.content")
    if content:
        block["content"] = content
    return block


def _tools(tools: object) -> list[JSON]:
    out = []
    for j, tool in enumerate(as_list(tools)):
        tool = as_dict(tool)
        function = as_dict(tool.get("function"))
        name = function.get("name")
        if tool.get("type") != "function" or not isinstance(name, str) or not name:
            raise TranslationError(
                "Only function tools with a name are supported for this model.", f"tools[{j}]"
            )
        schema = function.get("parameters")
        schema = schema if isinstance(schema, dict) and schema else {"properties": {}}
        # Anthropic insists on an object schema; OpenAI takes one without "type".
        converted: JSON = {"name": name, "input_schema": {"type": "object", **schema}}
        if isinstance(function.get("description"), str):
            converted["description"] = function["description"]
        out.append(_with_cache_control(converted, tool))
    return out


def _tools_for_history(turns: list[JSON]) -> list[JSON]:
    """Minimal definitions of the tools a conversation used, when the request gave none."""
    names = {
        block["name"]
        for turn in turns
        if turn["role"] == "assistant" and isinstance(turn["content"], list)
        for block in turn["content"]
        if block.get("type") == "tool_use"
    }
    return [{"name": name, "input_schema": {"type": "object"}} for name in sorted(names)]


def _tool_choice(choice: object, parallel: object) -> JSON | None:
    converted: JSON | None
    if choice is None:
        converted = None
    elif isinstance(choice, str) and choice in _TOOL_CHOICES:
        converted = dict(_TOOL_CHOICES[choice])
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = as_dict(choice.get("function")).get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError("'tool_choice.function.name' is required.", "tool_choice")
        converted = {"type": "tool", "name": name}
    else:
        raise TranslationError(
            f"tool_choice {choice!r} is not supported for this model.", "tool_choice"
        )
    if parallel is False:
        converted = converted or {"type": "auto"}
        if converted["type"] != "none":
            converted["disable_parallel_tool_use"] = True
    return converted


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TranslationError(f"'{name}' must be a positive integer.", name)
        return value
    return None


def _thinking(effort: object, max_tokens: int | None, choice: JSON | None) -> int | None:
    """The thinking budget ``reasoning_effort`` asks for, or None for no thinking."""
    if effort is None or effort == "none":
        return None
    if not isinstance(effort, str) or effort not in THINKING_BUDGETS:
        raise TranslationError(f"Unknown reasoning_effort {effort!r}.", "reasoning_effort")
    if choice is not None and choice["type"] in ("any", "tool"):
        return None
    budget = THINKING_BUDGETS[effort]
    if max_tokens is not None:
        budget = min(budget, max_tokens - 1)
    return budget if budget >= MIN_THINKING_BUDGET else None


def _unsigned_tool_turn(turns: list[JSON]) -> bool:
    """Whether the last assistant turn calls tools without its thinking sent back.

    With thinking on, Anthropic wants such a turn to start with its signed thinking block;
    a client that dropped ``thinking_blocks`` gets this request without thinking instead.
    """
    last = next((turn for turn in reversed(turns) if turn["role"] == "assistant"), None)
    if last is None or not isinstance(last["content"], list):
        return False
    kinds = [block.get("type") for block in last["content"]]
    return "tool_use" in kinds and kinds[0] not in ("thinking", "redacted_thinking")


def _response_format(value: object, out: JSON) -> list[JSON]:
    """Sets ``output_config`` for a schema; the system blocks json_object needs."""
    if value is None:
        return []
    fmt = as_dict(value)
    kind = fmt.get("type")
    if kind == "text":
        return []
    if kind == "json_object":
        return [{"type": "text", "text": JSON_OBJECT_INSTRUCTION}]
    schema = as_dict(fmt.get("json_schema")).get("schema")
    if kind == "json_schema" and isinstance(schema, dict):
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        return []
    raise TranslationError(
        f"response_format {value!r} is not supported for this model.", "response_format"
    )


def _sampling(body: Mapping[str, Any], out: JSON, thinking_on: bool) -> None:
    temperature, top_p, top_k = body.get("temperature"), body.get("top_p"), body.get("top_k")
    if _number(temperature) and not thinking_on:
        out["temperature"] = min(max(float(temperature), 0.0), MAX_TEMPERATURE)
    if _number(top_p) and top_p != 1 and (not thinking_on or top_p >= MIN_THINKING_TOP_P):
        out["top_p"] = top_p
    if isinstance(top_k, int) and not isinstance(top_k, bool) and not thinking_on:
        out["top_k"] = top_k
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else as_list(stop)
    stops = [s for s in stops if isinstance(s, str) and s]
    if stops:
        out["stop_sequences"] = stops


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- the response --------------------------------------------------------------------------


def _message_from_blocks(content: list[Any]) -> JSON:
    texts: list[str] = []
    calls: list[JSON] = []
    reasoning: list[str] = []
    thinking_blocks: list[JSON] = []
    for block in content:
        block = as_dict(block)
        kind = block.get("type")
        if kind == "text":
            texts.append(as_str(block.get("text")))
        elif kind == "tool_use":
            calls.append(_tool_call(block))
        elif kind == "thinking":
            reasoning.append(as_str(block.get("thinking")))
            thinking_blocks.append(_thinking_block(block))
        elif kind == "redacted_thinking":
            thinking_blocks.append({"type": "redacted_thinking", "data": as_str(block.get("data"))})
    message: JSON = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if thinking_blocks:
        message["thinking_blocks"] = thinking_blocks
    return message


def _tool_call(block: JSON) -> JSON:
    arguments = block.get("input")
    return {
        "id": as_str(block.get("id")),
        "type": "function",
        "function": {
            "name": as_str(block.get("name")),
            "arguments": dumps(arguments if isinstance(arguments, dict) else {}),
        },
    }


def _thinking_block(block: JSON) -> JSON:
    return {
        "type": "thinking",
        "thinking": as_str(block.get("thinking")),
        "signature": as_str(block.get("signature")),
    }


def openai_usage(usage: JSON) -> JSON:
    """Anthropic usage as OpenAI's: prompt tokens include the cached ones, as OpenAI counts."""
    cache_read = as_int(usage.get("cache_read_input_tokens"))
    prompt = (
        as_int(usage.get("input_tokens"))
        + as_int(usage.get("cache_creation_input_tokens"))
        + cache_read
    )
    completion = as_int(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


# --- the stream ----------------------------------------------------------------------------


@dataclass
class _Block:
    """What the client has been told of one upstream content block."""

    kind: str
    tool_index: int = -1
    thinking: list[str] = field(default_factory=list)
    signature: str = ""


class AnthropicEventsToChunks(EventStream):
    """Anthropic ``message_start`` ... ``message_stop`` events as OpenAI chunks and ``[DONE]``."""

    def __init__(self, include_usage: bool, created: int) -> None:
        super().__init__()
        self.include_usage = include_usage
        self.created = created
        self.id = ""
        self.model = ""
        self.started = False
        self.blocks: dict[int, _Block] = {}
        self.tool_calls = 0
        self.thinking_blocks = 0
        self.usage: JSON = {}
        self.stop_reason: str | None = None

    def _event(self, event: Event) -> bytes:
        if event.event == "ping":
            return b""
        data = parse_data(event)
        if data is None:
            return self._fail("api_error", "The upstream sent an event that is not a JSON object.")
        kind = data.get("type", event.event)
        if kind == "error":
            error = as_dict(data.get("error"))
            return self._fail(
                as_str(error.get("type"), "api_error"),
                as_str(error.get("message"), "The upstream failed mid-stream."),
            )
        if kind == "message_start":
            return self._message_start(as_dict(data.get("message")))
        out = self._start()
        if kind == "content_block_start":
            out += self._block_start(data.get("index"), as_dict(data.get("content_block")))
        elif kind == "content_block_delta":
            out += self._block_delta(data.get("index"), as_dict(data.get("delta")))
        elif kind == "content_block_stop":
            out += self._block_stop(data.get("index"))
        elif kind == "message_delta":
            self._message_delta(data)
        elif kind == "message_stop":
            out += self._close()
        return out

    def _message_start(self, message: JSON) -> bytes:
        self.id = as_str(message.get("id"), self.id)
        self.model = as_str(message.get("model"), self.model)
        self.usage.update(as_dict(message.get("usage")))
        return self._start()

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, index: object, block: JSON) -> bytes:
        if not isinstance(index, int):
            return b""
        kind = as_str(block.get("type"))
        state = self.blocks[index] = _Block(kind)
        if kind == "text":
            return self._text(as_str(block.get("text")))
        if kind == "thinking":
            return self._thinking(state, as_str(block.get("thinking")))
        if kind == "redacted_thinking":
            entry = {"type": "redacted_thinking", "data": as_str(block.get("data"))}
            return self._thinking_block(entry)
        if kind == "tool_use":
            return self._tool_start(state, block)
        return b""  # server-tool blocks: nothing the client can act on

    def _block_delta(self, index: object, delta: JSON) -> bytes:
        state = self.blocks.get(index) if isinstance(index, int) else None
        if state is None:
            return b""
        kind = delta.get("type")
        if kind == "text_delta" and state.kind == "text":
            return self._text(as_str(delta.get("text")))
        if kind == "thinking_delta" and state.kind == "thinking":
            return self._thinking(state, as_str(delta.get("thinking")))
        if kind == "signature_delta" and state.kind == "thinking":
            state.signature += as_str(delta.get("signature"))
        elif kind == "input_json_delta" and state.kind == "tool_use":
            return self._arguments(state.tool_index, as_str(delta.get("partial_json")))
        return b""

    def _block_stop(self, index: object) -> bytes:
        state = self.blocks.get(index) if isinstance(index, int) else None
        if state is None or state.kind != "thinking":
            return b""
        # The whole block once it is signed, for the client to send back next turn.
        entry = {
            "type": "thinking",
            "thinking": "".join(state.thinking),
            "signature": state.signature,
        }
        return self._thinking_block(entry)

    def _message_delta(self, data: JSON) -> None:
        reason = as_dict(data.get("delta")).get("stop_reason")
        if isinstance(reason, str):
            self.stop_reason = reason
        # message_delta counts are cumulative: they replace, never add.
        self.usage.update(
            {key: value for key, value in as_dict(data.get("usage")).items() if value is not None}
        )

    def _text(self, text: str) -> bytes:
        return self._chunk({"content": text}) if text else b""

    def _thinking(self, state: _Block, text: str) -> bytes:
        if not text:
            return b""
        state.thinking.append(text)
        return self._chunk({"reasoning_content": text})

    def _thinking_block(self, entry: JSON) -> bytes:
        # ``index`` lets the OpenAI SDK's delta accumulator merge entries of a list.
        entry = {"index": self.thinking_blocks, **entry}
        self.thinking_blocks += 1
        return self._chunk({"thinking_blocks": [entry]})

    def _tool_start(self, state: _Block, block: JSON) -> bytes:
        state.tool_index = self.tool_calls
        self.tool_calls += 1
        call = {
            "index": state.tool_index,
            "id": as_str(block.get("id")),
            "type": "function",
            "function": {"name": as_str(block.get("name")), "arguments": ""},
        }
        out = self._chunk({"tool_calls": [call]})
        # Streamed tool_use blocks start with an empty input; a filled one is sent whole.
        given = block.get("input")
        if isinstance(given, dict) and given:
            out += self._arguments(state.tool_index, dumps(given))
        return out

    def _arguments(self, tool_index: int, fragment: str) -> bytes:
        if not fragment:
            return b""
        return self._chunk(
            {"tool_calls": [{"index": tool_index, "function": {"arguments": fragment}}]}
        )

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return encode_json(self._envelope([choice]))

    def _envelope(self, choices: list[JSON]) -> JSON:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def _close(self) -> bytes:
        out = self._start()
        out += self._chunk({}, FINISH_REASONS.get(self.stop_reason or "", "stop"))
        if self.include_usage:
            out += encode_json({**self._envelope([]), "usage": openai_usage(self.usage)})
        self.done = True
        return out + encode("[DONE]")

    def _end(self) -> bytes:
        if self.stop_reason is not None:
            # Cut after message_delta: everything but message_stop arrived.
            return self._close()
        return self._fail(
            "api_error", "The upstream's stream ended before the response was complete."
        )

    def _fail(self, anthropic_type: str, message: str) -> bytes:
        self.done = True
        error = error_shapes.openai_error(
            message, error_shapes.openai_type_for_anthropic(anthropic_type), anthropic_type
        )
        return encode_json(error)
