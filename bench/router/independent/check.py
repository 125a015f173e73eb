"""Validate bench/router/independent/independent.jsonl against config.yaml and print counts.

Usage: python bench/router/independent/check.py [DATASET] [CONFIG]

The dev set's checker (../check_dataset.py) does not fit this set: rows carry a voice
beside their kind, there are kinds it does not know (paraphrase, agent_turn), and agent
turns hold tool calls and tool results (OpenAI `tool` messages, Anthropic `tool_use` and
`tool_result` blocks). Its config check and count tables are reused. Exits non-zero when a
record is malformed or a count is below its minimum.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from check_dataset import key_problems, load_routes, matrix, table  # noqa: E402

KINDS = {
    "single_turn": 30,  # one clear request
    "paraphrase": 30,  # one request said indirectly, without the route's words
    "follow_up": 20,  # the last turn only makes sense with the earlier ones
    "topic_shift": 20,  # the last turn leaves the earlier task: it alone decides
    "long_paste": 15,  # a long pasted text or code with a short ask
    "non_english": 25,  # the user writes in another language
    "system_prompt_other_domain": 15,  # a system prompt about another domain
    "agent_turn": 15,  # a step of an agent's tool loop, after the human's request
    "other": 15,  # a single request that fits no route
}
VOICES = {"terse": 25, "chatty": 25, "non_native": 20, "code_heavy": 12, "formal": 12, "plain": 25}
ROUTE_MINIMUM = 20
OTHER_MINIMUM = 30
TOTAL_MINIMUM = 240
ROLES = {"system", "user", "assistant", "tool"}
PART_TYPES = {"text", "image_url", "tool_use", "tool_result"}
PASTE_CHARS = (600, 3200)
SINGLE = ("single_turn", "paraphrase", "other")


def text_of(content: Any) -> str | None:
    """The text a person typed in a message content; None if the content is malformed."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        return None
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
            return None
        if part["type"] == "text":
            texts.append(str(part.get("text", "")))
    return "\n".join(texts)


def is_human(msg: dict[str, Any]) -> bool:
    return msg.get("role") == "user" and bool((text_of(msg.get("content")) or "").strip())


def has_tool_step(msgs: list[dict[str, Any]]) -> bool:
    for msg in msgs:
        content = msg.get("content")
        if msg.get("role") == "tool" or msg.get("tool_calls"):
            return True
        if isinstance(content, list) and any(p.get("type") == "tool_result" for p in content):
            return True
    return False


def check_record(rec: Any, labels: set[str]) -> list[str]:
    if not isinstance(rec, dict):
        return ["record is not an object"]
    keys = ("id", "case", "voice", "messages", "expected_route")
    errs = key_problems(rec, keys)
    if rec.get("case") not in KINDS:
        errs.append(f"unknown case {rec.get('case')!r}")
    if rec.get("voice") not in VOICES:
        errs.append(f"unknown voice {rec.get('voice')!r}")
    if rec.get("expected_route") not in labels:
        errs.append(f"unknown expected_route {rec.get('expected_route')!r}")
    msgs = rec.get("messages")
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
        return [*errs, "messages must be a non-empty list of objects"]
    for i, msg in enumerate(msgs):
        if msg.get("role") not in ROLES:
            errs.append(f"messages[{i}] has no valid role")
        elif msg.get("role") == "system" and i:
            errs.append(f"messages[{i}] is a system message after the first position")
        elif msg.get("content") is None and msg.get("tool_calls"):
            continue  # an assistant turn that only calls a tool
        elif text_of(msg.get("content")) is None:
            errs.append(f"messages[{i}] has malformed content")
    if not any(is_human(m) for m in msgs):
        errs.append("no user message with text")
    return errs or check_shape(str(rec["case"]), msgs)


def check_shape(case: str, msgs: list[dict[str, Any]]) -> list[str]:
    errs: list[str] = []
    turns = msgs[1:] if msgs[0]["role"] == "system" else msgs
    humans = [m for m in msgs if is_human(m)]
    if case == "agent_turn":
        if not has_tool_step(msgs):
            errs.append("agent_turn has no tool call or tool result")
        if is_human(msgs[-1]):
            errs.append("agent_turn must end in the agent's work (a tool result), not a human turn")
        return errs
    if has_tool_step(msgs):
        errs.append(f"{case} holds tool steps")
    roles = [m["role"] for m in turns]
    if roles != ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]:
        errs.append(f"turns do not alternate user/assistant: {roles}")
    if not is_human(msgs[-1]):
        errs.append("last message is not a user turn with text")
    if case in SINGLE and [m["role"] for m in msgs] != ["user"]:
        errs.append(f"{case} must be one user message")
    if case in ("follow_up", "topic_shift") and len(turns) < 3:
        errs.append(f"{case} needs earlier turns, got {len(turns)} messages")
    if case == "system_prompt_other_domain" and msgs[0]["role"] != "system":
        errs.append("system_prompt_other_domain must start with a system message")
    if case == "long_paste":
        longest = max(len(text_of(m["content"]) or "") for m in humans)
        if not PASTE_CHARS[0] <= longest <= PASTE_CHARS[1]:
            errs.append(f"long_paste user turn has {longest} chars, want {PASTE_CHARS}")
    return errs


def main(argv: list[str]) -> int:
    data_path = Path(argv[1]) if len(argv) > 1 else HERE / "independent.jsonl"
    config_path = Path(argv[2]) if len(argv) > 2 else HERE / "config.yaml"
    routes, problems = load_routes(config_path)
    labels = [*routes, "other"]
    seen: set[str] = set()
    kinds: Counter[str] = Counter()
    voices: Counter[str] = Counter()
    routed: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    voice_pairs: Counter[tuple[str, str]] = Counter()
    for lineno, line in enumerate(data_path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {lineno}: invalid JSON: {exc}")
            continue
        if not isinstance(rec, dict):
            problems.append(f"line {lineno}: record is not an object")
            continue
        problems += [
            f"line {lineno} ({rec.get('id')}): {e}" for e in check_record(rec, set(labels))
        ]
        if rec.get("id") in seen:
            problems.append(f"line {lineno}: duplicate id {rec.get('id')}")
        seen.add(str(rec.get("id")))
        route, kind, voice = (str(rec.get(k)) for k in ("expected_route", "case", "voice"))
        kinds[kind] += 1
        voices[voice] += 1
        routed[route] += 1
        pairs[(route, kind)] += 1
        voice_pairs[(route, voice)] += 1
    problems += [f"case {k}: {kinds[k]} < {n}" for k, n in KINDS.items() if kinds[k] < n]
    problems += [f"voice {v}: {voices[v]} < {n}" for v, n in VOICES.items() if voices[v] < n]
    short = [r for r in routes if routed[r] < ROUTE_MINIMUM]
    problems += [f"route {r}: {routed[r]} < {ROUTE_MINIMUM}" for r in short]
    if routed["other"] < OTHER_MINIMUM:
        problems.append(f"other: {routed['other']} < {OTHER_MINIMUM}")
    if len(seen) < TOTAL_MINIMUM:
        problems.append(f"{len(seen)} records < {TOTAL_MINIMUM}")
    print(table(kinds, list(KINDS), "case"))
    print()
    print(table(voices, list(VOICES), "voice"))
    print()
    print(table(routed, labels, "expected_route"))
    print()
    print(matrix(pairs, list(KINDS), labels))
    print()
    print(matrix(voice_pairs, list(VOICES), labels))
    for p in problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    print(f"\n{len(seen)} records, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
