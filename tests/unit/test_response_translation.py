"""The second ext_proc filter's messages: a translated response, headers then body, as Envoy
sends them on a translated provider route, and what ``TranslatedResponse`` answers."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

import anthropic
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plano_extproc._proto import ext_proc_pb2 as pb
from plano_extproc.extproc.response_translation import TranslatedResponse
from plano_extproc.translate import AnthropicToOpenAI, OpenAIToAnthropic, Translator
from plano_extproc.translate.sse import SSEParser
from plano_extproc.wire import INCLUDE_USAGE_KEY, LOCAL_REPLY_HEADER, RESPONSE_NAMESPACE
from tests.translate_fixtures import (
    ANTHROPIC_ERROR_BODIES,
    ANTHROPIC_MESSAGE,
    ANTHROPIC_STREAM,
    ANTHROPIC_STREAM_CUT_MID_EVENT,
    OPENAI_COMPLETION,
    OPENAI_ERROR_BODIES,
    OPENAI_STREAM,
    as_json,
)
from tests.translate_fixtures import http as sdk_http

pytestmark = pytest.mark.unit

CREATED = 1700000000
SSE = "text/event-stream"
JSON = "application/json"


def to_openai_client() -> Translator:
    """The pair for an OpenAI client of an Anthropic upstream, with a fixed clock."""
    return OpenAIToAnthropic(clock=lambda: CREATED)


def to_anthropic_client() -> Translator:
    return AnthropicToOpenAI()


# --- the messages Envoy sends ---------------------------------------------------------------


def header(key: str, value: str, raw: bool = True) -> pb.HeaderValue:
    # Envoy sends raw_value; a plain value is read too.
    if raw:
        return pb.HeaderValue(key=key, raw_value=value.encode())
    return pb.HeaderValue(key=key, value=value)


def response_headers(
    status: int | str,
    content_type: str,
    include_usage: bool | None = None,
    raw: bool = True,
) -> pb.ProcessingRequest:
    headers = [
        header(":status", str(status), raw),
        header("content-type", content_type, raw),
        header("content-length", "1234", raw),
        header("x-request-id", "r-1", raw),
    ]
    message = pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(headers=pb.HeaderMap(headers=headers))
    )
    if include_usage is not None:
        # What the decision stored for the response (processor.py), forwarded by Envoy.
        message.metadata_context.filter_metadata[RESPONSE_NAMESPACE].update(
            {INCLUDE_USAGE_KEY: include_usage}
        )
    return message


def response_body(data: bytes, end: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=data, end_of_stream=end))


def pieces_at(raw: bytes, cuts: Sequence[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def chunk_out(answer: pb.ProcessingResponse) -> bytes:
    """What the client gets for one streamed chunk's answer: its new body (cleared: none)."""
    assert answer.WhichOneof("response") == "response_body"
    common = answer.response_body.response
    assert not common.HasField("header_mutation")  # the headers are gone by now
    kind = common.body_mutation.WhichOneof("mutation")
    if kind == "clear_body":
        assert common.body_mutation.clear_body
        return b""
    assert kind == "body"
    assert common.body_mutation.body  # an empty chunk is cleared, never set to b""
    return common.body_mutation.body


def stream_through(
    make_pair: Callable[[], Translator],
    pieces: Sequence[bytes],
    include_usage: bool | None = None,
) -> bytes:
    """A 200 event stream of ``pieces`` through one TranslatedResponse: the client's bytes."""
    response = TranslatedResponse(make_pair())
    answer, last = response.handle(response_headers(200, SSE, include_usage))
    assert not last
    assert answer.WhichOneof("response") == "response_headers"
    assert not answer.HasField("mode_override")  # streamed as it comes
    mutation = answer.response_headers.response.header_mutation
    assert list(mutation.remove_headers) == ["content-length"]  # the length changes
    assert not mutation.set_headers  # the status and the content type stay
    out = b""
    for i, piece in enumerate(pieces):
        end = i == len(pieces) - 1
        answer, last = response.handle(response_body(piece, end))
        assert last is end  # the last answer ends the gRPC stream, no other
        out += chunk_out(answer)
    return out


def direct(make_pair: Callable[[], Translator], raw: bytes, include_usage: bool) -> bytes:
    """The pair's own translation of the whole upstream stream, in one piece."""
    stream = make_pair().stream({"stream_options": {"include_usage": include_usage}})
    return stream.feed(raw) + stream.finish()


def events(raw: bytes) -> list[Any]:
    parser = SSEParser()
    return [
        (e.event, e.data if e.data == "[DONE]" else json.loads(e.data))
        for e in parser.feed(raw) + parser.finish()
    ]


def sse_client(raw: bytes) -> sdk_http.Client:
    def handle(request: Any) -> Any:
        return sdk_http.Response(200, content=raw, headers={"content-type": SSE})

    return sdk_http.Client(transport=sdk_http.MockTransport(handle))


QUESTION: Any = [{"role": "user", "content": "Weather in Paris?"}]


# --- streamed: an OpenAI client of an Anthropic upstream ------------------------------------


def test_an_anthropic_stream_split_anywhere_reads_the_same_for_an_openai_client() -> None:
    whole = stream_through(to_openai_client, [ANTHROPIC_STREAM], include_usage=True)
    assert whole == direct(to_openai_client, ANTHROPIC_STREAM, include_usage=True)
    for cut in range(len(ANTHROPIC_STREAM) + 1):
        split = pieces_at(ANTHROPIC_STREAM, [cut])
        assert stream_through(to_openai_client, split, include_usage=True) == whole, cut
    one_byte_each = [ANTHROPIC_STREAM[i : i + 1] for i in range(len(ANTHROPIC_STREAM))]
    assert stream_through(to_openai_client, one_byte_each, include_usage=True) == whole


def test_the_openai_sdk_reads_the_translated_stream() -> None:
    raw = stream_through(to_openai_client, pieces_at(ANTHROPIC_STREAM, [100, 101, 1000]), True)
    client = openai.OpenAI(
        api_key="x", base_url="http://t/v1", max_retries=0, http_client=sse_client(raw)
    )
    stream = client.chat.completions.create(
        model="claude", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    text, arguments, finish, usage = "", "", None, None
    ids = set()
    for chunk in stream:
        assert chunk.created == CREATED
        ids.add(chunk.id)
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            assert call.index == 0
            arguments += (call.function.arguments or "") if call.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert ids == {"msg_014p7gG3wDgGV9EUtLvnow3U"}
    assert text == "Okay, let's check the weather in Paris 日本."
    assert json.loads(arguments) == {"location": "Paris", "unit": "celsius"}
    assert finish == "tool_calls"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (600, 89, 689)


@pytest.mark.parametrize(
    ("include_usage", "usage_chunks"), [(True, 1), (False, 0), (None, 0)], ids=str
)
def test_include_usage_comes_from_the_forwarded_metadata(
    include_usage: bool | None, usage_chunks: int
) -> None:
    out = events(stream_through(to_openai_client, [ANTHROPIC_STREAM], include_usage))
    assert out[-1] == (None, "[DONE]")
    chunks = [data for _, data in out[:-1]]
    assert sum("usage" in chunk for chunk in chunks) == usage_chunks
    if usage_chunks:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 89


def test_metadata_of_other_namespaces_is_not_read_as_include_usage() -> None:
    response = TranslatedResponse(to_openai_client())
    message = response_headers(200, SSE)
    message.metadata_context.filter_metadata["plano"].update({INCLUDE_USAGE_KEY: True})
    response.handle(message)
    answer, _ = response.handle(response_body(ANTHROPIC_STREAM, True))
    assert b'"usage"' not in chunk_out(answer)


def test_a_stream_cut_short_ends_with_an_error_event_in_the_last_answer() -> None:
    raw = ANTHROPIC_STREAM_CUT_MID_EVENT
    out = events(stream_through(to_openai_client, pieces_at(raw, [len(raw) // 2])))
    assert "error" in out[-1][1]
    assert (None, "[DONE]") not in out


# --- streamed: an Anthropic client of an OpenAI-compatible upstream -------------------------


def test_an_openai_stream_split_anywhere_reads_the_same_for_an_anthropic_client() -> None:
    whole = stream_through(to_anthropic_client, [OPENAI_STREAM])
    assert whole == direct(to_anthropic_client, OPENAI_STREAM, include_usage=False)
    for cut in range(len(OPENAI_STREAM) + 1):
        split = pieces_at(OPENAI_STREAM, [cut])
        assert stream_through(to_anthropic_client, split) == whole, cut
    one_byte_each = [OPENAI_STREAM[i : i + 1] for i in range(len(OPENAI_STREAM))]
    assert stream_through(to_anthropic_client, one_byte_each) == whole
    kinds = [name for name, _ in events(whole)]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]


def test_the_anthropic_sdk_reads_the_translated_stream() -> None:
    raw = stream_through(to_anthropic_client, pieces_at(OPENAI_STREAM, [1, 2, 3, 500, 501]))
    client = anthropic.Anthropic(
        api_key="x", base_url="http://t", max_retries=0, http_client=sse_client(raw)
    )
    with client.messages.stream(model="gpt", max_tokens=512, messages=QUESTION) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Checking both — ünïcode."
    assert [block.type for block in final.content] == ["text", "tool_use", "tool_use"]
    assert [(b.id, b.name, b.input) for b in final.content if b.type == "tool_use"] == [
        ("call_abc123", "get_weather", {"location": "Paris"}),
        ("call_def456", "get_time", {"tz": "Europe/Paris"}),
    ]
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (18, 17)


@settings(max_examples=60, derandomize=True, deadline=None)
@given(data=st.data())
def test_any_chunking_of_either_stream_is_translated_the_same(data: st.DataObject) -> None:
    make_pair, raw = data.draw(
        st.sampled_from(
            [(to_openai_client, ANTHROPIC_STREAM), (to_anthropic_client, OPENAI_STREAM)]
        )
    )
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=40))
    usage = data.draw(st.booleans())
    expected = direct(make_pair, raw, include_usage=usage)
    assert stream_through(make_pair, pieces_at(raw, cuts), usage) == expected


def test_a_chunk_with_nothing_to_show_yet_clears_the_body() -> None:
    response = TranslatedResponse(to_openai_client())
    response.handle(response_headers(200, SSE))
    answer, last = response.handle(response_body(b"event: message_sta", False))
    assert not last
    mutation = answer.response_body.response.body_mutation
    assert mutation.WhichOneof("mutation") == "clear_body" and mutation.clear_body
    rest = ANTHROPIC_STREAM[len(b"event: message_sta") :]
    answer, last = response.handle(response_body(rest, True))
    assert last
    assert answer.response_body.response.body_mutation.WhichOneof("mutation") == "body"


def test_an_event_stream_content_type_with_parameters_is_streamed() -> None:
    response = TranslatedResponse(to_openai_client())
    answer, _ = response.handle(response_headers(200, "Text/Event-Stream; charset=utf-8"))
    assert not answer.HasField("mode_override")
    answer, _ = response.handle(response_body(ANTHROPIC_STREAM, True))
    assert events(chunk_out(answer))[-1] == (None, "[DONE]")


# --- read whole: JSON responses and errors --------------------------------------------------


def apply(headers: dict[str, str], mutation: pb.HeaderMutation) -> None:
    """A header mutation, as Envoy applies it."""
    for name in mutation.remove_headers:
        headers.pop(name, None)
    for option in mutation.set_headers:
        assert option.append_action == pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        assert option.header.value == ""  # raw_value: Envoy applied `value` as empty
        headers[option.header.key] = option.header.raw_value.decode()


def read_whole(
    make_pair: Callable[[], Translator],
    status: int | str,
    content_type: str,
    body: bytes,
    raw_headers: bool = True,
    chunk: int = 7,
) -> tuple[int, str, bytes]:
    """What the client gets of a response that is not a 2xx event stream: (status,
    content-type, body), the answers applied as Envoy applies them. The body comes in
    ``chunk``-byte pieces (the route's STREAMED mode), in one message if the headers answer
    asked Envoy to buffer it (which Envoy ignores when it sends the body without waiting
    for that answer, as configured); the last message, and only it, ends the gRPC stream."""
    response = TranslatedResponse(make_pair())
    message = response_headers(status, content_type, raw=raw_headers)
    headers = {
        h.key: h.raw_value.decode() or h.value for h in message.response_headers.headers.headers
    }
    answer, last = response.handle(message)
    assert not last
    assert answer.WhichOneof("response") == "response_headers"
    apply(headers, answer.response_headers.response.header_mutation)
    buffered = answer.mode_override.response_body_mode == pb.ProcessingMode.BUFFERED
    pieces = [body] if buffered else [body[i : i + chunk] for i in range(0, len(body), chunk)]
    out = b""
    for i, piece in enumerate(pieces or [b""]):
        end = i == max(len(pieces), 1) - 1
        answer, last = response.handle(response_body(piece, end))
        assert last is end
        common = answer.response_body.response
        if buffered:  # the headers are held until the body is answered
            apply(headers, common.header_mutation)
        else:  # the headers are gone: a mutation of them now would fail the response
            assert not common.HasField("header_mutation")
        kind = common.body_mutation.WhichOneof("mutation")
        out += common.body_mutation.body if kind == "body" else b"" if kind else piece
    assert "content-length" not in headers  # the translated body has another length
    assert headers["x-request-id"] == "r-1"  # the rest are the upstream's
    return int(headers[":status"]), headers["content-type"], out


def test_a_whole_response_status_is_set_from_its_headers_and_its_body_sent_at_the_end() -> None:
    body = as_json(ANTHROPIC_MESSAGE)
    response = TranslatedResponse(to_openai_client())
    answer, last = response.handle(response_headers(200, JSON))
    assert not last
    # Envoy sends the first chunk without waiting for this answer, so it cannot ask for a
    # buffered body: the headers are answered from the headers alone.
    assert not answer.HasField("mode_override")
    mutation = answer.response_headers.response.header_mutation
    headers: dict[str, str] = {}
    apply(headers, mutation)
    assert headers == {":status": "200", "content-type": JSON}
    assert list(mutation.remove_headers) == ["content-length"]
    # Each chunk is held back (cleared) until the last, which carries the translation.
    pieces = pieces_at(body, [10, 11, 500])
    for piece in pieces[:-1]:
        answer, last = response.handle(response_body(piece, False))
        assert not last
        assert answer.response_body.response.body_mutation.WhichOneof("mutation") == "clear_body"
    answer, last = response.handle(response_body(pieces[-1], True))
    assert last
    common = answer.response_body.response
    assert not common.HasField("header_mutation")  # the headers are gone by now
    assert common.body_mutation.body == to_openai_client().response_bytes(200, body)[1]


@settings(max_examples=40, derandomize=True, deadline=None)
@given(chunk=st.integers(1, 400), to_openai=st.booleans(), error=st.booleans())
def test_a_whole_response_reads_the_same_however_it_is_chunked(
    chunk: int, to_openai: bool, error: bool
) -> None:
    make_pair = to_openai_client if to_openai else to_anthropic_client
    if error:
        status, value = (ANTHROPIC_ERROR_BODIES if to_openai else OPENAI_ERROR_BODIES)["invalid"]
    else:
        status, value = 200, ANTHROPIC_MESSAGE if to_openai else OPENAI_COMPLETION
    raw = as_json(value)
    expected = make_pair().response_bytes(status, raw)
    assert read_whole(make_pair, status, JSON, raw, chunk=chunk) == (expected[0], JSON, expected[1])


def test_a_json_message_becomes_a_chat_completion() -> None:
    body = as_json(ANTHROPIC_MESSAGE)
    status, content_type, out = read_whole(to_openai_client, 200, JSON, body)
    assert (status, content_type) == (200, JSON)
    assert out == to_openai_client().response_bytes(200, body)[1]
    completion = json.loads(out)
    assert completion["object"] == "chat.completion"
    assert completion["id"] == ANTHROPIC_MESSAGE["id"]
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert completion["choices"][0]["message"]["content"] == "Let me check the weather in Paris."


def test_a_json_completion_becomes_a_message() -> None:
    body = as_json(OPENAI_COMPLETION)
    status, content_type, out = read_whole(to_anthropic_client, 201, JSON, body, False)
    assert (status, content_type) == (201, JSON)
    message = json.loads(out)
    assert message["type"] == "message" and message["role"] == "assistant"
    assert [block["type"] for block in message["content"]] == ["text", "tool_use", "tool_use"]
    assert message["stop_reason"] == "tool_use"


def openai_error(body: bytes) -> dict[str, Any]:
    error = json.loads(body)
    assert set(error) == {"error"}
    assert set(error["error"]) == {"message", "type", "param", "code"}
    return error["error"]  # type: ignore[no-any-return]


def anthropic_error(body: bytes) -> dict[str, Any]:
    error = json.loads(body)
    assert set(error) == {"type", "error"} and error["type"] == "error"
    assert set(error["error"]) == {"type", "message"}
    return error["error"]  # type: ignore[no-any-return]


def test_anthropics_529_is_an_openai_clients_503() -> None:
    status, body = ANTHROPIC_ERROR_BODIES["overloaded"]
    got, content_type, out = read_whole(to_openai_client, status, JSON, as_json(body))
    assert (got, content_type) == (503, JSON)
    error = openai_error(out)
    assert (error["type"], error["code"], error["message"]) == (
        "server_error",
        "overloaded_error",
        "Overloaded",
    )


def test_openais_503_is_an_anthropic_clients_529_overloaded() -> None:
    status, body = OPENAI_ERROR_BODIES["overloaded"]
    got, content_type, out = read_whole(to_anthropic_client, status, JSON, as_json(body))
    assert (got, content_type) == (529, JSON)
    assert anthropic_error(out) == {
        "type": "overloaded_error",
        "message": "The engine is currently overloaded.",
    }


@pytest.mark.parametrize("name", sorted(ANTHROPIC_ERROR_BODIES))
def test_every_anthropic_error_reaches_an_openai_client_in_its_shape(name: str) -> None:
    status, body = ANTHROPIC_ERROR_BODIES[name]
    got, _, out = read_whole(to_openai_client, status, JSON, as_json(body))
    assert got == (503 if status == 529 else status)
    assert openai_error(out)["code"] == body["error"]["type"]


@pytest.mark.parametrize("name", sorted(OPENAI_ERROR_BODIES))
def test_every_openai_error_reaches_an_anthropic_client_in_its_shape(name: str) -> None:
    status, body = OPENAI_ERROR_BODIES[name]
    got, _, out = read_whole(to_anthropic_client, status, JSON, as_json(body))
    assert got == (529 if status == 503 else status)
    assert anthropic_error(out)["message"] == body["error"]["message"]


@pytest.mark.parametrize("content_type", [JSON, "text/html", "text/plain", ""])
def test_a_200_that_is_not_a_response_is_an_error_body_under_the_200(content_type: str) -> None:
    # The 200 went out with the headers (the first token must not wait for the whole body):
    # a 2xx that turns out not to be a response gets the client's error body, of the type
    # of the 502 the gateway would have answered.
    garbage = b"<html>upstream proxy error</html>"
    status, content_type_out, out = read_whole(to_openai_client, 200, content_type, garbage)
    assert (status, content_type_out) == (200, JSON)
    error = openai_error(out)
    assert error["type"] == "server_error"
    assert error["message"] == "upstream returned HTTP 200: <html>upstream proxy error</html>"
    status, _, out = read_whole(to_anthropic_client, 200, content_type, garbage)
    assert status == 200
    assert anthropic_error(out)["type"] == "api_error"
    assert to_anthropic_client().response_bytes(200, garbage)[0] == 502


def test_an_error_status_with_an_event_stream_type_is_read_whole() -> None:
    # Only a 2xx event stream is streamed: an error is one JSON body, whatever its type.
    status, body = ANTHROPIC_ERROR_BODIES["rate"]
    got, content_type, out = read_whole(to_openai_client, status, SSE, as_json(body))
    assert (got, content_type) == (429, JSON)
    assert openai_error(out)["code"] == "rate_limit_error"


def test_a_status_that_is_not_a_number_is_a_502() -> None:
    status, _, out = read_whole(to_openai_client, "2OO", JSON, as_json(ANTHROPIC_MESSAGE))
    assert status == 502
    openai_error(out)


@settings(max_examples=80, derandomize=True, deadline=None)
@given(
    status=st.integers(100, 599),
    body=st.one_of(st.binary(max_size=200), st.just(as_json(ANTHROPIC_MESSAGE))),
    to_openai=st.booleans(),
)
def test_any_whole_reply_gets_a_status_and_a_json_body_in_the_clients_shape(
    status: int, body: bytes, to_openai: bool
) -> None:
    make_pair = to_openai_client if to_openai else to_anthropic_client
    got, content_type, out = read_whole(make_pair, status, JSON, body)
    assert content_type == JSON
    assert 200 <= got <= 599
    parsed = json.loads(out.decode("utf-8"))
    if not 200 <= got < 300:
        (openai_error if to_openai else anthropic_error)(out)
    else:
        assert isinstance(parsed, dict)


# --- anything else ------------------------------------------------------------------------


def test_trailers_end_the_stream_and_other_phases_pass() -> None:
    response = TranslatedResponse(to_openai_client())
    trailers = pb.ProcessingRequest(response_trailers=pb.HttpTrailers())
    answer, last = response.handle(trailers)
    assert answer.WhichOneof("response") == "response_trailers" and last
    request_headers = pb.ProcessingRequest(request_headers=pb.HttpHeaders())
    answer, last = response.handle(request_headers)
    assert answer.WhichOneof("response") == "request_headers" and not last
    assert answer.request_headers.response == pb.CommonResponse()


def test_a_whole_response_over_the_limit_is_an_error_that_quotes_none_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("plano_extproc.extproc.response_translation.MAX_WHOLE_RESPONSE_BYTES", 100)
    response = TranslatedResponse(to_openai_client())
    response.handle(response_headers(200, JSON))
    for piece in (b"a" * 60, b"b" * 60):  # over the limit at the second chunk
        answer, last = response.handle(response_body(piece, False))
        assert not last
    answer, last = response.handle(response_body(b"TAIL" * 5, True))
    assert last
    error = openai_error(answer.response_body.response.body_mutation.body)
    assert "limit" in error["message"]
    assert "TAIL" not in error["message"] and "b" * 10 not in error["message"]


def test_envoys_own_reply_on_a_translated_route_passes_untouched() -> None:
    # The local-reply mappers wrote it in the client's shape already, and marked it.
    for content_type in (JSON, SSE):
        response = TranslatedResponse(to_openai_client())
        message = response_headers(503, content_type)
        message.response_headers.headers.headers.append(header(LOCAL_REPLY_HEADER, "1"))
        answer, last = response.handle(message)
        assert not last
        assert answer == pb.ProcessingResponse(
            response_headers=pb.HeadersResponse(response=pb.CommonResponse())
        )
        reply = b'{"error": {"message": "The model provider could not be reached", "type": '
        for piece, end in ((reply, False), (b'"server_error"}}', True)):
            answer, last = response.handle(response_body(piece, end))
            assert last is end
            assert answer == pb.ProcessingResponse(
                response_body=pb.BodyResponse(response=pb.CommonResponse())
            )
