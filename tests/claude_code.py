"""Running the real Claude Code CLI headless (`claude -p PROMPT`) against a base URL, for tests.

`make claude-code` (and so `make test`) installs it, pinned, into build/node with npm; without
npm the tests that need it skip (`require_cli()`), saying why.

What Claude Code 2.1.332 does, seen on this machine against a fake Messages server:

- Env: ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY, a fresh writable HOME, DISABLE_TELEMETRY=1 and
  CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1: then its only traffic is `POST /v1/messages?beta=true`
  to the base URL (no GET, no HEAD, no count_tokens). A run takes 0.5-1.5 s.
- CLAUDE_CODE_MAX_RETRIES=0: by default a 5xx is retried with backoff for minutes (14 POSTs in
  40 s); with 0 it gives up after one request (exit 1, "API Error: 500 ..." on stdout).
- ANTHROPIC_DEFAULT_HAIKU_MODEL / ANTHROPIC_SMALL_FAST_MODEL name its small background model;
  with the variables above, `-p` (a tool loop included) made no background request at all.
- CLAUDE_CODE_DISABLE_LEGACY_MODEL_REMAP=1: without it `--model claude-opus-4-1` is sent as
  `claude-opus-5-5`. Any other name is sent as given (an unknown one only warns on stderr:
  "Claude Code doesn't recognize the model ...").
- Headers: x-api-key (the key as given), anthropic-version: 2023-06-01, anthropic-beta (a
  comma list; for an unknown model: claude-code-20250219, interleaved-thinking-2025-05-14,
  context-management-2025-06-27, mid-conversation-tool-changes-2026-07-01,
  thinking-token-count-2026-05-13, advanced-tool-use-2025-11-20, effort-2025-11-24), x-app: cli,
  user-agent: claude-cli/2.1.332 (external, sdk-cli), X-Claude-Code-Session-Id, X-Stainless-*
  (Retry-Count, Timeout: 600, ...), anthropic-dangerous-direct-browser-access: true,
  Accept-Encoding: gzip, deflate, br, zstd.
- Body (~49 KB for `say hi` in an empty folder; ~88 KB for claude-sonnet-4-5): model,
  messages, system (a list of text blocks, some with cache_control), tools (12: Agent, Bash,
  Edit, ListAgents, Read, ReportFindings, ScheduleWakeup, Skill, ToolSearch, Workflow,
  DeferredToolPlaceholder (with defer_loading), Write), metadata.user_id (a JSON string),
  max_tokens (32000; 128000 for Opus), thinking ({"type": "adaptive"}; "enabled" with
  budget_tokens for claude-sonnet-4-5), context_management, output_config ({"effort": "high"}),
  stream: true. The shape depends on the model name.
- Messages: the user turn is a list of text blocks, `<system-reminder>` blocks first, the typed
  prompt last. For a model name it does not know (an alias such as `coder`, `gpt-5.2`) and
  for the newest Opus (claude-opus-4-8; not claude-opus-4-6) a `{"role": "system"}` message
  (environment, skills, date) FOLLOWS that user turn, so the last message is not the user's,
  and anthropic-beta adds mid-conversation-tool-changes-2026-07-01; names it knows
  (claude-haiku-4-5, claude-sonnet-4-6, claude-opus-4-1 with the remap off) send the user
  turn alone.
  A tool loop's next request appends the assistant's tool_use turn and a user turn holding only
  the tool_result block (with cache_control).
- The reply may be the minimal SSE sequence (message_start, content_block_start,
  content_block_delta, content_block_stop, message_delta, message_stop); text is printed as is.
- Tools, as root: a read-only Bash command (`echo hello`) runs with no flag; one that writes
  needs `--allowedTools "Bash(touch:*)"` (else its tool_result is an is_error "needs approval").
  `--dangerously-skip-permissions` and `--permission-mode bypassPermissions` exit 1 as root
  ("cannot be used with root/sudo privileges") unless IS_SANDBOX=1 is set.
- `--output-format json` prints one JSON object (`result` is the text); `stream-json` needs
  `--verbose` with -p and prints one JSON object a line (system init, assistant, result).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CLAUDE_CODE_VERSION = "2.1.332"  # the Makefile's CLAUDE_CODE_VERSION
REPO = Path(__file__).resolve().parent.parent
LOCAL_CLI = REPO / "build" / "node" / "node_modules" / ".bin" / "claude"


def find_cli() -> str | None:
    """The repo-local CLI (`make claude-code`), else `claude` on PATH, else None."""
    if os.access(LOCAL_CLI, os.X_OK):
        return str(LOCAL_CLI)
    return shutil.which("claude")


@functools.cache
def skip_reason() -> str | None:
    """Why the Claude Code tests cannot run here, or None when they can."""
    cli = find_cli()
    if cli is None:
        if shutil.which("npm") is None:
            return "Claude Code CLI not installed, and no npm (Node.js) to install it with"
        return f"Claude Code CLI not installed: run `make claude-code` (looked in {LOCAL_CLI})"
    try:
        done = subprocess.run(
            [cli, "--version"], capture_output=True, text=True, timeout=30, env=_base_env()
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"Claude Code CLI at {cli} does not run: {e}"
    if done.returncode != 0:
        return f"Claude Code CLI at {cli} does not run: {(done.stderr or done.stdout).strip()}"
    return None


def require_cli() -> str:
    """The CLI's path; skips the test (with the reason) when it is absent or broken."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    cli = find_cli()
    assert cli is not None
    return cli


@dataclass
class ClaudeRun:
    args: list[str]
    returncode: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    duration_s: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def json(self) -> Any:
        """The one object `--output-format json` prints."""
        return json.loads(self.stdout)

    def events(self) -> list[Any]:
        """The objects `--output-format stream-json` prints, one a line."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def describe(self) -> str:
        """For assertion messages."""
        return (
            f"claude exited {self.returncode} after {self.duration_s:.1f}s\n"
            f"args: {self.args}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )


def _base_env() -> dict[str, str]:
    # Nothing of the caller's environment but PATH and the locale: no ANTHROPIC_*, CLAUDE_*,
    # proxies or HOME of the user's leak into the run.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_PROXY": "127.0.0.1,localhost"}
    for name in ("LANG", "LC_ALL", "TERM"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def run_claude(
    prompt: str,
    *,
    base_url: str,
    api_key: str,
    model: str,
    timeout: float = 60.0,
    output_format: str = "text",
    allowed_tools: Sequence[str] = (),
    tools: Sequence[str] | None = None,
    permission_mode: str | None = None,
    skip_permissions: bool = False,
    max_turns: int | None = None,
    max_retries: int = 0,
    cwd: Path | None = None,
    extra_args: Sequence[str] = (),
    extra_env: dict[str, str] | None = None,
    cli: str | None = None,
) -> ClaudeRun:
    """`claude -p PROMPT --model MODEL` headless against ``base_url`` (no `/v1`: the CLI adds
    `/v1/messages`), in a fresh temporary HOME, killed (its whole process group) at
    ``timeout``. ``cwd`` defaults to a fresh empty folder; the CLI's tools act there.

    ``allowed_tools`` is passed as `--allowedTools` (e.g. "Bash(touch:*)", "Read");
    ``skip_permissions`` adds `--dangerously-skip-permissions` and IS_SANDBOX=1 (which it needs
    as root); ``max_retries`` is CLAUDE_CODE_MAX_RETRIES (0: one request per turn, no backoff);
    ``output_format`` "stream-json" adds the `--verbose` it requires."""
    cli = cli or require_cli()
    args = [cli, "-p", prompt, "--model", model]
    if output_format != "text":
        args += ["--output-format", output_format]
        if output_format == "stream-json":
            args.append("--verbose")
    if tools is not None:
        args += ["--tools", ",".join(tools)]
    if allowed_tools:
        args += ["--allowedTools", *allowed_tools]
    if permission_mode is not None:
        args += ["--permission-mode", permission_mode]
    if skip_permissions:
        args.append("--dangerously-skip-permissions")
    if max_turns is not None:
        args += ["--max-turns", str(max_turns)]
    args += list(extra_args)

    with tempfile.TemporaryDirectory(prefix="claude-code-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        workdir = cwd if cwd is not None else Path(tmp) / "work"
        workdir.mkdir(exist_ok=True)
        env = _base_env() | {
            "HOME": str(home),
            "TMPDIR": tmp,
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_API_KEY": api_key,
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_DISABLE_LEGACY_MODEL_REMAP": "1",
            "CLAUDE_CODE_MAX_RETRIES": str(max_retries),
        }
        if skip_permissions:
            env["IS_SANDBOX"] = "1"
        env |= extra_env or {}
        started = time.monotonic()
        process = subprocess.Popen(
            args,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,  # with a pipe it would wait for stdin input
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its tools' shells go with it at the timeout
        )
        returncode: int | None
        try:
            stdout, stderr = process.communicate(timeout=timeout)
            returncode = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            returncode = None
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return ClaudeRun(args, returncode, stdout, stderr, time.monotonic() - started)
