"""Pieces of gateway config YAML that many unit tests start from, so each test file states
only what it adds: the listener, and the two providers most tests route between (OpenAI as
the default, Anthropic beside it). Concatenate them, then append a test's own lines; together
they are the lines they replace, so errors' line numbers stay as the tests expect."""

from __future__ import annotations

LISTENER = """
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: 12000"""
# Opens the provider list: OpenAI's model, the default.
OPENAI_DEFAULT = """
llm_providers:
  - model: openai/gpt-5.2
    access_key: $OPENAI_API_KEY
    default: true
"""
# Anthropic's model as a second provider; a test appends its routing preferences.
ANTHROPIC = """  - model: anthropic/claude-sonnet-4-5
    access_key: ${ANTHROPIC_API_KEY}
"""
# The two providers with no listener section.
TWO_PROVIDERS = OPENAI_DEFAULT + ANTHROPIC
