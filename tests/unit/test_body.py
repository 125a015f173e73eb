"""The body parsed in place: exactly what json.loads reads, and only the model rewritten."""

from __future__ import annotations

import json

import pytest

from plano_extproc.body import parse, with_model

pytestmark = pytest.mark.unit

SAME_AS_JSON_LOADS = [
    b'{"model":"a","messages":[]}',
    b' \n\t{ "model" : "a" , "messages" : [ ] } \r\n',
    b"{}",
    b'{"messages": [{"content": "{\\"model\\": \\"fake\\"}"}], "model": "a"}',
    b'{"tools": [{"parameters": {"properties": {"model": {"type": "string"}}}}]}',
    b'{"mod\\u0065l": "escaped-key", "messages": []}',
    b'{"model": "first", "model": "second"}',
    b'{"model": "caf\\u00e9", "x": 1e400, "y": -0.0, "z": 12345678901234567890}',
    '{"model": "日本", "messages": ["ü"]}'.encode(),
    '\ufeff{"model": "bom"}'.encode(),
    '{"model": "utf16"}'.encode("utf-16"),
    b"[1, 2]",
    b'"text"',
]


@pytest.mark.parametrize("raw", SAME_AS_JSON_LOADS)
def test_parse_reads_what_json_loads_reads(raw: bytes) -> None:
    assert parse(raw).value == json.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [b"{oops", b'{"a": 1} trailing', b'{"a": NaN}', b'{"a": Infinity}', b"", b'{"a": 1,}'],
)
def test_parse_rejects_what_is_not_json(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse(raw)


def test_rewrite_touches_only_the_top_level_model() -> None:
    raw = (
        b'{"tools": [{"model": "nested"}], "model" : "openai/gpt-5.2",'
        b' "messages": [{"content": "say \\"model\\": 1"}], "temperature": 0.50}'
    )
    new = with_model(parse(raw), "gpt-5.2")
    assert new == raw.replace(b'"openai/gpt-5.2"', b'"gpt-5.2"')


def test_rewrite_adds_a_missing_model_first() -> None:
    assert with_model(parse(b'{"messages": []}'), "m") == b'{"model":"m","messages": []}'
    assert with_model(parse(b" { } "), "m") == b' {"model":"m" } '


def test_rewrite_of_an_unchanged_model_is_none() -> None:
    assert with_model(parse(b'{"model": "gpt-5.2", "messages": []}'), "gpt-5.2") is None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "first", "model": "second", "messages": []}',  # a provider may read either
        '{"model": "utf16", "messages": []}'.encode("utf-16"),
        '\ufeff{"model": "bom", "messages": []}'.encode(),
    ],
)
def test_unusual_bodies_are_written_again_with_one_model(raw: bytes) -> None:
    new = with_model(parse(raw), "gpt-5.2")
    assert new is not None
    assert new.count(b'"model"') == 1
    assert json.loads(new) == {**json.loads(raw), "model": "gpt-5.2"}


def test_an_escaped_key_is_still_the_model() -> None:
    new = with_model(parse(b'{"mod\\u0065l": "escaped-key", "messages": []}'), "gpt-5.2")
    assert new == b'{"mod\\u0065l": "gpt-5.2", "messages": []}'


def test_non_ascii_text_is_spliced_by_character_not_byte() -> None:
    raw = '{"messages": ["ünïcödé"], "model": "x", "after": "日本"}'.encode()
    new = with_model(parse(raw), "gpt-5.2")
    assert new == '{"messages": ["ünïcödé"], "model": "gpt-5.2", "after": "日本"}'.encode()


def test_model_names_are_json_escaped() -> None:
    new = with_model(parse(b'{"model": "a"}'), 'we"ird\\name')
    assert new is not None and json.loads(new)["model"] == 'we"ird\\name'
