"""The body parsed in place: exactly what json.loads reads, and only the model rewritten."""

from __future__ import annotations

import json

import pytest

from plano_extproc.body import NestedTooDeeply, attach, detach, parse, with_model

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


def refuse(name: str) -> object:
    raise AssertionError(f"{name} is not JSON")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"messages": [], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"a": {"b": ' + b'{"c": ' * 3000 + b"1" + b"}" * 3002,
        b"[" * 100_000,
        '\ufeff{"x": '.encode() + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
def test_nesting_too_deep_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(NestedTooDeeply):
        parse(raw)


def test_ordinary_nesting_is_read() -> None:
    raw = b'{"x": ' + b"[" * 200 + b"]" * 200 + b"}"
    assert parse(raw).value == json.loads(raw)


def test_bytes_that_are_not_utf8_are_refused() -> None:
    # An encoded surrogate: json.loads lets it through, and the text could not be encoded again.
    raw = b'{"model": "a", "messages": ["\xed\xb2\x80"]}'
    assert json.loads(raw)["messages"] == ["\udc80"]
    with pytest.raises(ValueError):
        parse(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "a", "temperature": 1e999, "top_p": 0.50, "n": -0.0}',
        '\ufeff{"model": "a", "temperature": 1e999, "top_p": 0.50, "n": -0.0}'.encode(),
        '{"model": "a", "temperature": 1e999, "top_p": 0.50, "n": -0.0}'.encode("utf-16"),
        '{"model": "a", "temperature": 1e999, "top_p": 0.50, "n": -0.0}'.encode("utf-32-le"),
        b'{"model": "a", "temperature": 1e999, "model": "b", "top_p": 0.50, "n": -0.0}',
    ],
)
def test_a_rewrite_keeps_the_clients_text_on_every_path(raw: bytes) -> None:
    # Nothing is serialized again: json.dumps would write 1e999 back as Infinity, which no
    # JSON parser reads, and respell 0.50 and -0.0.
    new = with_model(parse(raw), "gpt-5.2")
    assert new is not None
    text = new.decode("utf-8")
    assert "1e999" in text and "0.50" in text and "-0.0" in text and "Infinity" not in text
    assert json.loads(text, parse_constant=refuse) == {**json.loads(raw), "model": "gpt-5.2"}


def test_lone_surrogate_escapes_are_forwarded_as_written() -> None:
    for raw in (
        b'{"model": "a", "messages": ["\\udc80"]}',
        '\ufeff{"model": "a", "messages": ["\\udc80"]}'.encode(),
    ):
        new = with_model(parse(raw), "gpt-5.2")
        assert new is not None and b'"\\udc80"' in new
        assert json.loads(new) == {"model": "gpt-5.2", "messages": ["\udc80"]}


def test_a_repeated_model_keeps_its_first_place_only() -> None:
    raw = b'{"model": "a", "messages": [], "model" : "b",\n "x": 1, "mod\\u0065l": "c"}'
    assert parse(raw).value["model"] == "c"  # json.loads: the last one
    assert with_model(parse(raw), "gpt-5.2") == b'{"model": "gpt-5.2", "messages": [],\n "x": 1}'
    # Even when the first already names it, the others must go.
    assert with_model(parse(raw), "a") == b'{"model": "a", "messages": [],\n "x": 1}'


DETACHABLE = [
    b'{"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "x"}]}',
    b'{"messages": [{"role": "user", "content": "x"}]}',
    b'{ "messages": [], "model": "gpt-5.2" }',
    '{"messages": ["ünïcödé 日本"], "model": "x", "after": "日本"}'.encode(),
    '{"messages": ["ü"], "model": "x", "model": "y", "z": "日本", "model": "w"}'.encode(),
    '\ufeff{"messages": ["ü"], "model": "x"}'.encode(),
    '{"messages": ["日本"], "temperature": 1e999}'.encode("utf-16"),
    b" { } ",
]


@pytest.mark.parametrize("raw", DETACHABLE)
def test_a_detached_body_rewrites_as_the_body_itself(raw: bytes) -> None:
    body = parse(raw)
    travelled = detach(body, raw)
    assert travelled.value is None
    # Only a body in another encoding carries its (UTF-8) text back.
    assert (travelled.text is None) == (raw.decode("utf-8", "replace") == body.text)
    for model in ("gpt-5.2", "x"):
        expected = with_model(body, model)
        wrapped = memoryview(b"head" + raw + b"tail")[4:-4]  # a view into a bigger message
        for held in (raw, wrapped):
            assert with_model(attach(travelled, held), model) == (
                raw if expected is None else expected
            )
