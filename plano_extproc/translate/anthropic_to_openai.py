"""An Anthropic Messages client (the Anthropic SDK, Claude Code) in front of an
OpenAI-compatible chat-completions upstream.

Request (``POST /v1/messages`` body -> ``POST /v1/chat/completions`` body):

| Anthropic                                  | OpenAI                                          |
|--------------------------------------------|-------------------------------------------------|
| ``model``                                  | ``model`` = the provider's model id             |
| ``system`` (string or text blocks)         | one leading ``system`` message (blocks joined   |
|                                            | with a blank line)                              |
| ``system``-role messages (Claude Code      | ``system`` messages where they stand            |
| sends one after the user's turn)           |                                                 |
| user ``text`` blocks                       | a string (several joined with a blank line);    |
|                                            | ``text`` parts when images or files come along  |
| ``image`` base64 / url source              | ``image_url`` with a ``data:`` URL / the URL    |
| ``document`` base64 PDF                    | ``file`` with ``file_data`` (a ``data:`` URL)   |
| ``document`` plain-text source             | a ``text`` part                                 |
| ``tool_result`` blocks (``tool_use_id``)   | ``tool`` messages (``tool_call_id``), before    |
|                                            | the rest of that user turn; a result's images   |
|                                            | go in a user message after the tool messages    |
|                                            | (OpenAI tool messages carry text only)          |
| assistant ``text`` + ``tool_use`` blocks   | ``content`` + ``tool_calls`` (``input`` object  |
|                                            | -> ``arguments`` JSON string)                   |
| ``tools`` (name, description,              | ``tools`` (``function``: name, description,     |
| ``input_schema``)                          | parameters)                                     |
| ``tool_choice`` auto / none / any / tool   | auto / none / required / a named function       |
| ``disable_parallel_tool_use: true``        | ``parallel_tool_calls: false``                  |
| ``stop_sequences``                         | ``stop`` (the first 4: OpenAI's limit)          |
| ``max_tokens``                             | ``max_completion_tokens`` (or ``max_tokens``:   |
|                                            | ``max_tokens_field``)                           |
| ``temperature`` (0-1), ``top_p``           | the same (0-1 lies inside OpenAI's 0-2)         |
| ``thinking: {type: enabled,                | ``reasoning_effort``: low up to 2048, medium    |
| budget_tokens}``                           | up to 8192, high above                          |
| ``output_config.effort``                   | ``reasoning_effort`` (xhigh and max -> high)    |
| ``output_config.format`` json_schema       | ``response_format`` json_schema (strict)        |
| ``metadata.user_id``                       | ``user``                                        |
| ``stream``                                 | ``stream`` + ``stream_options.include_usage``   |
|                                            | (usage is what ``message_delta`` reports)       |

Decisions:

- ``max_tokens`` goes out as ``max_completion_tokens``, which OpenAI's reasoning models
  require; a provider that only knows ``max_tokens`` gets a translator built with
  ``max_tokens_field="max_tokens"``. The value is passed as given: a model whose output
  limit is lower answers with its own error.
- Thinking from the upstream (``reasoning_content``, or ``reasoning`` as some servers name
  it) becomes a ``thinking`` block with an empty ``signature``; thinking blocks sent back
  in a request are dropped (OpenAI-compatible servers have no field that takes them back).
- A tool call whose ``arguments`` are not a JSON object becomes ``input: {}``.

Refused (400, the client's error shape): ``image`` / ``document`` sources that are a Files
API ``file`` or a PDF ``url``; user content blocks of any other type (search results,
container uploads, ...): dropping what the user sent would change the question.

Dropped (no OpenAI equivalent): ``top_k``, ``cache_control`` everywhere, ``citations``,
``tool_result.is_error`` (the content still says what went wrong), server tools
(``web_search``, ``bash``, ... tools with a ``type`` and no ``input_schema``) and the
server-tool blocks in assistant turns, ``thinking`` / ``redacted_thinking`` blocks in
requests, ``thinking: {type: adaptive}`` (the upstream's default effort applies),
``service_tier``, ``container``, ``mcp_servers``, ``context_management``,
``inference_geo``, stop sequences beyond the fourth; and any other field not named here
(only what is mapped is sent).

Response (``chat.completion`` -> ``message``; ``chat.completion.chunk``s -> events): the
upstream's ``id`` and ``model`` are kept; the first choice is read; ``reasoning_content`` ->
a ``thinking`` block, ``content`` (and ``refusal``) -> a ``text`` block, ``tool_calls`` ->
``tool_use`` blocks; ``finish_reason`` stop -> ``end_turn`` (OpenAI does not say whether a
stop sequence matched, so ``stop_sequence`` is always null), length -> ``max_tokens``,
tool_calls / function_call -> ``tool_use``, content_filter -> ``refusal``; usage
``prompt_tokens`` - ``prompt_tokens_details.cached_tokens`` -> ``input_tokens``,
``cached_tokens`` -> ``cache_read_input_tokens``, ``completion_tokens`` -> ``output_tokens``.

Streams: ``message_start`` (usage 0: OpenAI reports usage last) at the first chunk; then a
``content_block_start`` / deltas / ``content_block_stop`` per thinking, text or tool-call
run, with indexes counting up from 0 (a tool call's ``id`` and name start its block,
``arguments`` fragments are ``input_json_delta``s); ``message_delta`` (stop reason and the
usage, ``input_tokens`` included) and ``message_stop`` at ``[DONE]``. An upstream that
ends after a ``finish_reason`` but without ``[DONE]`` is closed normally; one that ends
before, or sends ``{"error": ...}`` or a chunk that is not JSON, gets an ``error`` event
(the Anthropic SDK raises it) and nothing more. Rough edge: fragments for a tool call
whose block was closed (a server interleaving parallel calls) are still sent, to that
block's index.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
from .sse import Event, dumps, encode_json

MAX_STOP_SEQUENCES = 4
# Thinking budgets up to these ask for low, then medium; above, high. They are the budgets
# openai_to_anthropic gives low and medium, so an effort survives a round trip.
LOW_BUDGET = 2048
MEDIUM_BUDGET = 8192
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_TOOL_CHOICES = {"auto": "auto", "none": "none", "any": "required"}
# Blocks an assistant turn can hold that only Anthropic's own servers act on.
_SERVER_BLOCK = ("server_tool_use", "web_search_tool_result", "web_fetch_tool_result")


@dataclass(frozen=True)
class AnthropicToOpenAI(Translator):
    client_api = ANTHROPIC
    upstream_api = OPENAI

    max_tokens_field: str = "max_completion_tokens"

    def _request(self, body: Mapping[str, Any], model_id: str) -> JSON:
        out: JSON = {"model": model_id, "messages": _messages(body)}
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
            out[self.max_tokens_field] = max_tokens
        for name in ("temperature", "top_p"):
            value = body.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[name] = value
        stops = [s for s in as_list(body.get("stop_sequences")) if isinstance(s, str) and s]
        if stops:
            out["stop"] = stops[:MAX_STOP_SEQUENCES]
        _tools(body, out)
        effort = _effort(as_dict(body.get("thinking")), as_dict(body.get("output_config")))
        if effort:
            out["reasoning_effort"] = effort
        schema = as_dict(as_dict(body.get("output_config")).get("format")).get("schema")
        if isinstance(schema, dict):
            out["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": schema, "strict": True},
            }
        user = as_dict(body.get("metadata")).get("user_id")
        if isinstance(user, str) and user:
            out["user"] = user
        if body.get("stream") is True:
            out["stream"] = True
            out["stream_options"] = {"include_usage": True}
        return out

    def is_response(self, body: object) -> TypeGuard[JSON]:
        return (
            isinstance(body, dict) and isinstance(body.get("choices"), list) and "error" not in body
        )

    def _response(self, body: JSON) -> JSON:
        choices = [as_dict(choice) for choice in as_list(body.get("choices"))]
        choice = choices[0] if choices else {}
        message = as_dict(choice.get("message"))
        content = _thinking_blocks(_reasoning(message)) + _text_blocks(message)
        for j, call in enumerate(as_list(message.get("tool_calls"))):
            content.append(_tool_use(as_dict(call), as_str(body.get("id")), j))
        return {
            "id": as_str(body.get("id")),
            "type": "message",
            "role": "assistant",
            "model": as_str(body.get("model")),
            "content": content,
            "stop_reason": STOP_REASONS.get(as_str(choice.get("finish_reason")), "end_turn"),
            "stop_sequence": None,
            "usage": anthropic_usage(as_dict(body.get("usage"))),
        }

    def _error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return error_shapes.openai_to_anthropic(status, body)

    def client_error(self, status: int, message: str, param: str | None = None) -> JSON:
        # Anthropic's error shape has no param: name it in the message.
        if param:
            message = f"{param}: {message}"
        return error_shapes.anthropic_error(error_shapes.anthropic_type_for_status(status), message)

    def stream(self, client_request: Mapping[str, Any] | None = None) -> ChunksToAnthropicEvents:
        return ChunksToAnthropicEvents()


# --- the request ---------------------------------------------------------------------------


def _messages(body: Mapping[str, Any]) -> list[JSON]:
    out = []
    system = _system_text(body.get("system"))
    if system:
        out.append({"role": "system", "content": system})
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("'messages' must be a list.", "messages")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        message = as_dict(message)
        role, content = message.get("role"), message.get("content")
        if role == "user":
            out.extend(_user_messages(content, where))
        elif role == "assistant":
            out.extend(_assistant_message(content, where))
        elif role == "system":
            # Claude Code sends the environment (date, working directory) as a system-role
            # message after the user's turn; OpenAI takes system messages anywhere.
            text = _system_text(content)
            if text:
                out.append({"role": "system", "content": text})
        else:
            raise TranslationError(f"Unknown message role {role!r}.", f"{where}.role")
    return out


def _system_text(system: object) -> str:
    if isinstance(system, str):
        return system
    texts = [as_str(as_dict(block).get("text")) for block in as_list(system)]
    return "\n\n".join(text for text in texts if text)


def _joined_or_parts(parts: list[JSON]) -> str | list[JSON]:
    """Text-only content as one string (what every OpenAI-compatible server takes), else parts.

    Separate user text blocks are separate thoughts (Claude Code sends reminders and the
    prompt as blocks), so they are joined with a blank line.
    """
    if all(part["type"] == "text" for part in parts):
        return "\n\n".join(part["text"] for part in parts)
    return parts


def _user_messages(content: object, where: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise TranslationError("Content must be a string or a list of blocks.", f"{where}.content")
    tool_messages: list[JSON] = []
    parts: list[JSON] = []
    tool_images: list[JSON] = []
    for j, block in enumerate(content):
        block_where = f"{where}.content[{j}]"
        block = as_dict(block)
        if block.get("type") == "tool_result":
            message, images = _tool_message(block, block_where)
            tool_messages.append(message)
            tool_images.extend(images)
        else:
            parts.extend(_user_part(block, block_where))
    parts = tool_images + parts
    if parts:
        tool_messages.append({"role": "user", "content": _joined_or_parts(parts)})
    return tool_messages


def _user_part(block: JSON, where: str) -> list[JSON]:
    kind = block.get("type")
    if kind == "text":
        text = as_str(block.get("text"))
        return [{"type": "text", "text": text}] if text else []
    if kind == "image":
        return [_image_part(as_dict(block.get("source")), where)]
    if kind == "document":
        return [_document_part(block, where)]
    raise TranslationError(
        f"Content blocks of type {kind!r} are not supported for this model.", where
    )


def _image_part(source: JSON, where: str) -> JSON:
    if source.get("type") == "base64":
        media_type, data = as_str(source.get("media_type")), as_str(source.get("data"))
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise TranslationError("Only base64 and url image sources are supported for this model.", where)


def _document_part(block: JSON, where: str) -> JSON:
    source = as_dict(block.get("source"))
    kind = source.get("type")
    if kind == "base64" and source.get("media_type") == "application/pdf":
        file: JSON = {"file_data": f"data:application/pdf;base64,{as_str(source.get('data'))}"}
        file["filename"] = as_str(block.get("title"), "document.pdf")
        return {"type": "file", "file": file}
    if kind == "text":
        return {"type": "text", "text": as_str(source.get("data"))}
    if kind == "content":
        texts = [as_str(as_dict(part).get("text")) for part in as_list(source.get("content"))]
        return {"type": "text", "text": "\n\n".join(texts)}
    raise TranslationError(
        "Only inline PDF and text documents are supported for this model.", where
    )


def _tool_message(block: JSON, where: str) -> tuple[JSON, list[JSON]]:
    """A ``tool_result`` as a ``tool`` message, and the images OpenAI cannot put in one."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str):
        raise TranslationError("A tool_result needs a 'tool_use_id'.", where)
    content = block.get("content")
    texts: list[str] = []
    images: list[JSON] = []
    if isinstance(content, str):
        texts.append(content)
    for j, part in enumerate(as_list(content)):
        part = as_dict(part)
        if part.get("type") == "text":
            texts.append(as_str(part.get("text")))
        elif part.get("type") == "image":
            images.append(_image_part(as_dict(part.get("source")), f"{where}.content[{j}]"))
        else:
            raise TranslationError(
                "Tool results may hold text and images only for this model.",
                f"{where}.content[{j}]",
            )
    return {"role": "tool", "tool_call_id": call_id, "content": "\n".join(texts)}, images


def _assistant_message(content: object, where: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"role": "assistant", "content": content}]
    if not isinstance(content, list):
        raise TranslationError("Content must be a string or a list of blocks.", f"{where}.content")
    texts: list[str] = []
    calls: list[JSON] = []
    for j, block in enumerate(content):
        block = as_dict(block)
        kind = block.get("type")
        if kind == "text":
            texts.append(as_str(block.get("text")))
        elif kind == "tool_use":
            calls.append(_tool_call(block, f"{where}.content[{j}]"))
        elif kind in ("thinking", "redacted_thinking") or kind in _SERVER_BLOCK:
            continue
        else:
            raise TranslationError(
                f"Assistant content blocks of type {kind!r} are not supported for this model.",
                f"{where}.content[{j}]",
            )
    # An assistant's text blocks are one reply cut up (by tool calls, citations): no separator.
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return [message] if texts or calls else []


def _tool_call(block: JSON, where: str) -> JSON:
    call_id, name = block.get("id"), block.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise TranslationError("A tool_use block needs an 'id' and a 'name'.", where)
    arguments = block.get("input")
    return {
        "id": call_id,
        "type": "function",
        "function": {
            "name": name,
            "arguments": dumps(arguments if isinstance(arguments, dict) else {}),
        },
    }


def _tools(body: Mapping[str, Any], out: JSON) -> None:
    tools = []
    for tool in as_list(body.get("tools")):
        tool = as_dict(tool)
        schema = tool.get("input_schema")
        # Server tools (web search, bash, ...) have a type and no schema: only Anthropic runs them.
        if tool.get("type") not in (None, "custom") or not isinstance(schema, dict):
            continue
        function: JSON = {"name": as_str(tool.get("name")), "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        tools.append({"type": "function", "function": function})
    if not tools:
        return
    out["tools"] = tools
    choice = as_dict(body.get("tool_choice"))
    kind = choice.get("type")
    if isinstance(kind, str) and kind in _TOOL_CHOICES:
        out["tool_choice"] = _TOOL_CHOICES[kind]
    elif kind == "tool" and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def _effort(thinking: JSON, output_config: JSON) -> str | None:
    effort = output_config.get("effort")
    if isinstance(effort, str) and effort in _EFFORTS:
        return _EFFORTS[effort]
    budget = thinking.get("budget_tokens")
    if thinking.get("type") != "enabled" or not isinstance(budget, int):
        return None
    if budget <= LOW_BUDGET:
        return "low"
    return "medium" if budget <= MEDIUM_BUDGET else "high"


# --- the response --------------------------------------------------------------------------


def _reasoning(message: JSON) -> str:
    """Reasoning text: ``reasoning_content`` (DeepSeek, vLLM) or ``reasoning`` (others)."""
    return as_str(message.get("reasoning_content")) or as_str(message.get("reasoning"))


def _thinking_blocks(reasoning: str) -> list[JSON]:
    return [{"type": "thinking", "thinking": reasoning, "signature": ""}] if reasoning else []


def _text_blocks(message: JSON) -> list[JSON]:
    content = message.get("content")
    if isinstance(content, list):  # some servers answer with parts
        content = "".join(as_str(as_dict(part).get("text")) for part in content)
    text = as_str(content) + as_str(message.get("refusal"))
    return [{"type": "text", "text": text}] if text else []


def _tool_use(call: JSON, response_id: str, position: int) -> JSON:
    function = as_dict(call.get("function"))
    return {
        "type": "tool_use",
        "id": as_str(call.get("id")) or _call_id(response_id, position),
        "name": as_str(function.get("name")),
        "input": _input(function.get("arguments")),
    }


def _call_id(response_id: str, position: int) -> str:
    """An id for a tool call the upstream sent without one (unique within the conversation)."""
    return f"call_{response_id}_{position}"


def _input(arguments: object) -> JSON:
    if isinstance(arguments, dict):
        return arguments
    value = error_shapes.parse_json(arguments.encode()) if isinstance(arguments, str) else None
    return value if isinstance(value, dict) else {}


def anthropic_usage(usage: JSON) -> JSON:
    """OpenAI usage as Anthropic's: Anthropic counts cached tokens apart from input tokens."""
    cached = as_int(as_dict(usage.get("prompt_tokens_details")).get("cached_tokens"))
    prompt = as_int(usage.get("prompt_tokens"))
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": as_int(usage.get("completion_tokens")),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


# --- the stream ----------------------------------------------------------------------------


class ChunksToAnthropicEvents(EventStream):
    """OpenAI ``chat.completion.chunk``s and ``[DONE]`` as Anthropic's event sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.id = ""
        self.model = ""
        self.started = False
        self.next_index = 0
        # The open block: its kind ("text", "thinking", "tool_use") and index.
        self.open: tuple[str, int] | None = None
        self.open_tool: object = None
        # The upstream's tool-call index (or id) -> the block index it was given.
        self.tools: dict[object, int] = {}
        self.last_tool: object = None
        self.finish_reason: str | None = None
        self.usage: JSON = {}

    def _event(self, event: Event) -> bytes:
        if event.data.strip() == "[DONE]":
            return self._close()
        chunk = parse_data(event)
        if chunk is None:
            return self._fail("api_error", "The upstream sent a chunk that is not a JSON object.")
        if "error" in chunk and "choices" not in chunk:
            _, body = error_shapes.openai_to_anthropic(500, dumps(chunk).encode())
            error = as_dict(as_dict(error_shapes.parse_json(body)).get("error"))
            return self._fail(as_str(error.get("type"), "api_error"), as_str(error.get("message")))
        out = self._start(chunk)
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in as_list(chunk.get("choices")):
            choice = as_dict(choice)
            if choice.get("index", 0) == 0:
                out += self._choice(choice)
        return out

    def _start(self, chunk: JSON) -> bytes:
        if self.started:
            return b""
        self.started = True
        self.id = as_str(chunk.get("id"))
        self.model = as_str(chunk.get("model"))
        message: JSON = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"type": "message_start", "message": message})

    def _choice(self, choice: JSON) -> bytes:
        delta = as_dict(choice.get("delta"))
        out = self._delta("thinking", "thinking_delta", "thinking", _reasoning(delta))
        out += self._delta("text", "text_delta", "text", as_str(delta.get("content")))
        out += self._delta("text", "text_delta", "text", as_str(delta.get("refusal")))
        for call in as_list(delta.get("tool_calls")):
            out += self._tool_call(as_dict(call))
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            self.finish_reason = reason
            out += self._close_block()
        return out

    def _delta(self, kind: str, delta_type: str, field: str, text: str) -> bytes:
        if not text:
            return b""
        out = b""
        if self.open is None or self.open[0] != kind:
            block = {"type": kind, field: ""}
            if kind == "thinking":
                block["signature"] = ""
            out = self._open_block(kind, block)
        assert self.open is not None
        delta = {
            "type": "content_block_delta",
            "index": self.open[1],
            "delta": {"type": delta_type, field: text},
        }
        return out + _event("content_block_delta", delta)

    def _tool_call(self, call: JSON) -> bytes:
        function = as_dict(call.get("function"))
        key = self._tool_key(call)
        out = b""
        if key not in self.tools:
            call_id = as_str(call.get("id")) or _call_id(self.id, len(self.tools))
            block = {
                "type": "tool_use",
                "id": call_id,
                "name": as_str(function.get("name")),
                "input": {},
            }
            out = self._open_block("tool_use", block)
            self.tools[key] = self.next_index - 1
        self.last_tool = key
        fragment = as_str(function.get("arguments"))
        if fragment:
            delta = {"type": "input_json_delta", "partial_json": fragment}
            out += _event(
                "content_block_delta",
                {"type": "content_block_delta", "index": self.tools[key], "delta": delta},
            )
        return out

    def _tool_key(self, call: JSON) -> object:
        """The call a fragment is for: its ``index``; lacking one, a new ``id`` or the last call."""
        index = call.get("index")
        if isinstance(index, int):
            return index
        call_id = call.get("id")
        if isinstance(call_id, str) and call_id:
            return ("id", call_id)
        return self.last_tool if self.last_tool is not None else 0

    def _open_block(self, kind: str, block: JSON) -> bytes:
        out = self._close_block()
        index = self.next_index
        self.next_index += 1
        self.open = (kind, index)
        start = {"type": "content_block_start", "index": index, "content_block": block}
        return out + _event("content_block_start", start)

    def _close_block(self) -> bytes:
        if self.open is None:
            return b""
        index = self.open[1]
        self.open = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _close(self) -> bytes:
        out = self._start({}) + self._close_block()
        usage = anthropic_usage(self.usage)
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": STOP_REASONS.get(self.finish_reason or "", "end_turn"),
                "stop_sequence": None,
            },
            # Cumulative counts; input tokens too, as message_start could not know them.
            "usage": usage,
        }
        self.done = True
        return (
            out + _event("message_delta", delta) + _event("message_stop", {"type": "message_stop"})
        )

    def _end(self) -> bytes:
        if self.finish_reason is not None:
            # Some servers end without [DONE]; the response itself was complete.
            return self._close()
        return self._fail(
            "api_error", "The upstream's stream ended before the response was complete."
        )

    def _fail(self, anthropic_type: str, message: str) -> bytes:
        self.done = True
        return _event("error", error_shapes.anthropic_error(anthropic_type, message))


def _event(name: str, data: JSON) -> bytes:
    return encode_json(data, name)
