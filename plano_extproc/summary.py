"""The human summary that ``plano-extproc validate`` prints for a good config."""

from __future__ import annotations

from .config import Config, Provider


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def _key(p: Provider) -> str:
    if p.passthrough_auth:
        return "the client's own key (passthrough_auth)"
    if not p.access_key_vars:
        return "key given inline" if p.access_key else "no key"
    names = ", ".join(f"${v}" for v in p.access_key_vars)
    return f"key {names} (NOT SET)" if p.missing_vars else f"key {names} (set)"


def summarize(config: Config) -> str:
    lis = config.listener
    lines = [
        f"{config.source}: OK",
        f"format: {config.format}",
        f"listener: {lis.address}:{lis.port}  format {lis.message_format}  "
        f"timeout {lis.timeout_s:g}s  max body {_size(lis.max_body_bytes)}",
        f"providers ({len(config.providers)}):",
    ]
    for p in config.providers:
        flag = "  [default]" if p.default else ""
        flag += "  [any model id]" if p.wildcard else ""
        api = f"{p.interface} API" + (
            f", Azure deployments, api-version {p.api_version}" if p.api_version else ""
        )
        lines.append(
            f"  {p.name}{flag}  -> {p.endpoint.url} ({api})  cluster {p.cluster}  {_key(p)}"
        )
    lines.append(f"aliases ({len(config.aliases)}):")
    lines += [f"  {a.name} -> {a.model}" for a in config.aliases.values()]
    lines.append(f"routes ({len(config.routes)}):")
    lines += [f"  {r.name} -> {r.model}: {r.description}" for r in config.routes]
    fallback = config.default.name if config.default else "error (no default provider)"
    if config.routes:
        r = config.router
        model = str(r.model_dir) if r.model_dir else "the encoders `make models` builds"
        lines.append(
            f"router: {r.kind} ({model}), device {r.device}, timeout {r.timeout_s * 1000:g}ms, "
            f"budget {r.max_tokens} tokens, min_confidence {r.min_confidence:g}"
            + (f", decoding {r.decoding}" if r.kind == "arch" else "")
        )
        lines.append(f"no model named -> the router; other or fallback -> {fallback}")
        if r.route_named_models:
            patterns = ", ".join(r.route_named_models)
            lines.append(
                f"models named {patterns} -> the router; other -> the named model "
                "(or the default, for a model not served)"
            )
    else:
        lines.append(f"no model named -> {fallback}")
    for warning in config.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
