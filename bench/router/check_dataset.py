"""Validate bench/router/dev.jsonl against dev-config.yaml and print counts.

Usage: python bench/router/check_dataset.py [DATASET] [CONFIG]

Exits non-zero when a record is malformed. Counts are printed as Markdown tables
so they can be pasted into the README.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
CASE_MINIMUMS = {
    "single_turn": 50,
    "multi_turn": 30,
    "topic_shift": 30,
    "follow_up": 30,
    "system_prompt_other_domain": 20,
    "non_english": 25,
    "long_paste": 25,
    "other": 30,
}
ROUTE_MINIMUM = 15
ROLES = {"system", "user", "assistant"}
PASTE_CHARS = (600, 3200)  # longest user turn of a long_paste case (paste + short instruction)


def load_routes(config_path: Path) -> tuple[list[str], list[str]]:
    """Return the route names of the config and a list of problems with it."""
    problems: list[str] = []
    data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    providers = data.get("llm_providers") or []
    defaults = [p for p in providers if p.get("default") is True]
    if len(defaults) != 1:
        problems.append(f"config: expected exactly one default provider, got {len(defaults)}")
    for p in defaults:
        if p.get("routing_preferences"):
            problems.append(f"config: default provider {p['model']} has routing_preferences")
    routes: list[str] = []
    for p in providers:
        for pref in p.get("routing_preferences") or []:
            name, desc = pref.get("name"), pref.get("description", "")
            words = len(str(desc).split())
            if not 10 <= words <= 25:
                problems.append(f"config: route {name} description has {words} words")
            if name in routes:
                problems.append(f"config: duplicate route {name}")
            routes.append(name)
    return routes, problems


def content_text(content: Any) -> str | None:
    """Text of a message content (string or OpenAI content parts), None if malformed."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        return None
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            return None
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") == "image_url" and isinstance(part.get("image_url"), dict):
            continue
        else:
            return None
    return "\n".join(texts)


def key_problems(rec: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """The required keys a record lacks, then any key beyond them and the optional note."""
    errs = [f"missing key {key}" for key in keys if key not in rec]
    extra = set(rec) - {*keys, "note"}
    if extra:
        errs.append(f"unknown keys {sorted(extra)}")
    return errs


def check_record(rec: Any, valid_labels: set[str]) -> list[str]:
    """Return the problems with one parsed record."""
    if not isinstance(rec, dict):
        return ["record is not an object"]
    errs = key_problems(rec, ("id", "case", "messages", "expected_route"))
    if rec.get("case") not in CASE_MINIMUMS:
        errs.append(f"unknown case {rec.get('case')!r}")
    if rec.get("expected_route") not in valid_labels:
        errs.append(f"unknown expected_route {rec.get('expected_route')!r}")
    msgs = rec.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return [*errs, "messages must be a non-empty list"]
    for i, msg in enumerate(msgs):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            errs.append(f"messages[{i}] has no valid role")
            continue
        text = content_text(msg.get("content"))
        if text is None or not text.strip():
            errs.append(f"messages[{i}] has empty or malformed content")
    if isinstance(msgs[-1], dict) and msgs[-1].get("role") != "user":
        errs.append("last message is not from the user")
    if not errs:
        errs += check_shape(str(rec["case"]), msgs)
    return errs


def check_shape(case: str, msgs: list[dict[str, Any]]) -> list[str]:
    """Case-specific structure: turn order, turn counts, paste length."""
    errs: list[str] = []
    roles = [m["role"] for m in msgs]
    turns = roles[1:] if roles[0] == "system" else roles
    if "system" in turns:
        errs.append("system message after the first position")
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]
    if turns != expected:
        errs.append(f"turns do not alternate user/assistant: {turns}")
    if case == "single_turn" and roles != ["user"]:
        errs.append(f"single_turn must be one user message, got {roles}")
    if case == "multi_turn" and not 3 <= len(turns) <= 7:
        errs.append(f"multi_turn needs 3-7 messages, got {len(turns)}")
    if case in ("topic_shift", "follow_up") and len(turns) < 3:
        errs.append(f"{case} needs earlier turns, got {len(turns)} messages")
    if case == "system_prompt_other_domain" and roles[0] != "system":
        errs.append("system_prompt_other_domain must start with a system message")
    if case == "long_paste":
        longest = max(len(content_text(m["content"]) or "") for m in msgs if m["role"] == "user")
        if not PASTE_CHARS[0] <= longest <= PASTE_CHARS[1]:
            errs.append(f"long_paste user turn has {longest} chars, want {PASTE_CHARS}")
    return errs


def table(counter: Counter[str], keys: list[str], title: str) -> str:
    rows = [f"| {title} | count |", "|---|---:|"]
    rows += [f"| {k} | {counter.get(k, 0)} |" for k in keys]
    rows.append(f"| **total** | {sum(counter.values())} |")
    return "\n".join(rows)


def matrix(pairs: Counter[tuple[str, str]], cases: list[str], labels: list[str]) -> str:
    """Route-by-case table (rows: expected_route, columns: case)."""
    rows = ["| route | " + " | ".join(cases) + " | total |"]
    rows.append("|---|" + "---:|" * (len(cases) + 1))
    for label in labels:
        cells = [pairs.get((label, c), 0) for c in cases]
        rows.append(f"| {label} | " + " | ".join(map(str, cells)) + f" | {sum(cells)} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    data_path = Path(argv[1]) if len(argv) > 1 else HERE / "dev.jsonl"
    config_path = Path(argv[2]) if len(argv) > 2 else HERE / "dev-config.yaml"
    routes, problems = load_routes(config_path)
    valid = {*routes, "other"}
    seen: set[str] = set()
    cases: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    for lineno, line in enumerate(data_path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            problems.append(f"line {lineno}: blank line")
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {lineno}: invalid JSON: {exc}")
            continue
        for err in check_record(rec, valid):
            problems.append(f"line {lineno} ({rec.get('id', '?')}): {err}")
        if isinstance(rec, dict):
            rid = rec.get("id")
            if rid in seen:
                problems.append(f"line {lineno}: duplicate id {rid}")
            seen.add(str(rid))
            cases[str(rec.get("case"))] += 1
            labels[str(rec.get("expected_route"))] += 1
            pairs[(str(rec.get("expected_route")), str(rec.get("case")))] += 1
    for case, minimum in CASE_MINIMUMS.items():
        if cases[case] < minimum:
            problems.append(f"case {case}: {cases[case]} < {minimum}")
    for route in routes:
        if labels[route] < ROUTE_MINIMUM:
            problems.append(f"route {route}: {labels[route]} < {ROUTE_MINIMUM}")
    print(table(cases, list(CASE_MINIMUMS), "case"))
    print()
    print(table(labels, [*routes, "other"], "expected_route"))
    print()
    print(matrix(pairs, list(CASE_MINIMUMS), [*routes, "other"]))
    for p in problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    print(f"\n{len(seen)} records, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
