"""The SSE parser: the event-stream rules, in any chunking; the writer it reads back."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plano_extproc.translate.sse import Event, SSEParser, dumps, encode, encode_json
from tests.translate_fixtures import ANTHROPIC_STREAM, OPENAI_STREAM

pytestmark = pytest.mark.unit


def parse(raw: bytes, cuts: list[int] | None = None) -> list[Event]:
    parser = SSEParser()
    events: list[Event] = []
    start = 0
    for cut in sorted(cuts or []):
        events += parser.feed(raw[start:cut])
        start = cut
    events += parser.feed(raw[start:])
    return events + parser.finish()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"data: a\n\n", [Event("a")]),
        (b"data: a\r\n\r\n", [Event("a")]),
        (b"data: a\r\rdata: b\r\r", [Event("a"), Event("b")]),
        (b"event: x\ndata: a\n\n", [Event("a", "x")]),
        (b"data: one\ndata: two\n\n", [Event("one\ntwo")]),
        (b"data:no-space\n\n", [Event("no-space")]),
        (b"data:  two spaces\n\n", [Event(" two spaces")]),
        (b": a comment\ndata: a\n\n", [Event("a")]),
        (b"data\n\n", [Event("")]),
        (b"event: x\n\n", []),  # no data: nothing to dispatch
        (b"\xef\xbb\xbfdata: bom\n\n", [Event("bom")]),
        (b"data: \xef\xbb\xbfkept\n\n", [Event("\ufeffkept")]),  # only a leading BOM goes
        (b"id: 7\nretry: 100\ndata: a\n\n", [Event("a", None, "7", 100)]),
        (b"retry: soon\ndata: a\n\n", [Event("a")]),
        (b"unknown: field\ndata: a\n\n", [Event("a")]),
        (b"data: \xff bad utf-8\n\n", [Event("\ufffd bad utf-8")]),
        (b"event:\ndata: a\n\n", [Event("a")]),
    ],
)
def test_parses_the_event_stream_rules(raw: bytes, expected: list[Event]) -> None:
    assert parse(raw) == expected


def test_an_event_id_lasts_until_changed() -> None:
    events = parse(b"id: 1\ndata: a\n\ndata: b\n\n")
    assert [event.id for event in events] == ["1", "1"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # An upstream that closes right after its last event, blank line or not.
        (b"data: [DONE]\n", [Event("[DONE]")]),
        (b"data: [DONE]", [Event("[DONE]")]),
        (b'data: a\n\ndata: {"cut', [Event("a"), Event('{"cut')]),
        (b"data: a\n\n: just a comment", [Event("a")]),
        (b"data: a\n\nevent: x", [Event("a")]),
    ],
)
def test_finish_dispatches_what_the_stream_ended_on(raw: bytes, expected: list[Event]) -> None:
    assert parse(raw) == expected


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n\r") == [Event("a")]
    assert parser.feed(b"\ndata: b\n\n") == [Event("b")]
    assert parser.finish() == []


def test_a_utf8_character_split_between_chunks() -> None:
    raw = "data: 日本\n\n".encode()
    parser = SSEParser()
    cut = raw.index("本".encode()) + 1
    assert parser.feed(raw[:cut]) == []
    assert parser.feed(raw[cut:]) == [Event("日本")]


@pytest.mark.parametrize(
    "raw",
    [
        ANTHROPIC_STREAM,
        OPENAI_STREAM,
        ANTHROPIC_STREAM.replace(b"\n", b"\r\n"),
        OPENAI_STREAM.replace(b"\n", b"\r"),
        b"\xef\xbb\xbf: hi\r\ndata: x\r\n\r\ndata: \xe6\x97\xa5\xe6\x9c\xac\n\n",
    ],
)
@settings(max_examples=60, derandomize=True, deadline=None)
@given(data=st.data())
def test_any_chunking_parses_the_same(raw: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=30))
    assert parse(raw, cuts) == parse(raw)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(raw=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=10))
def test_any_bytes_parse_without_raising_in_any_chunking(raw: bytes, cuts: list[int]) -> None:
    assert parse(raw, [c for c in cuts if c <= len(raw)]) == parse(raw)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(data=st.text(), event=st.none() | st.text(st.characters(exclude_characters="\r\n")))
def test_the_writer_reads_back(data: str, event: str | None) -> None:
    data = data.replace("\r\n", "\n").replace("\r", "\n")
    assert parse(encode(data, event)) == [Event(data, event or None)]


def test_json_with_a_lone_surrogate_is_still_utf8() -> None:
    value = {"text": "a\udc80b", "ok": "日本"}
    text = dumps(value)
    assert json.loads(text.encode().decode()) == value
    assert json.loads(parse(encode_json(value, "x"))[0].data) == value


def test_json_is_compact_and_keeps_unicode() -> None:
    assert dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'
