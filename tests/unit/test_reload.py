"""The pure and local parts of a live reload: noticing a change (an edit, a rename, a ConfigMap's
symlink swap), keys read from files, what a reload refuses, what Envoy keeps while the server
switches, the order of the switch, the server's swap of its stream handler, and the dynamic
bootstrap (its xDS files cut from the static one, each accepted by ``envoy --mode validate``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from plano_extproc.config import Config, ConfigError, load_config, parse_config
from plano_extproc.envoy_config import EnvoyOptions, render_bootstrap, validate_with_envoy
from plano_extproc.envoy_config.dynamic import (
    CDS_FILE,
    LDS_FILE,
    RDS_FILE,
    inlined,
    render_dynamic,
    version_of,
    write_xds,
)
from plano_extproc.extproc.live import LiveConfig
from plano_extproc.ops.reload import (
    EnvoyReloader,
    FileWatch,
    Refused,
    check,
    needs_envoy_first,
    restart_needed,
    retained,
)
from tests.configs import LISTENER, TWO_PROVIDERS

pytestmark = pytest.mark.unit

BASE = LISTENER + TWO_PROVIDERS
EXTRA = """  - model: openai/gpt-new
    access_key: $NEW_KEY
    base_url: http://127.0.0.1:9/v1
"""
ENV = {"OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a", "NEW_KEY": "n"}


def load(path: str | Path) -> Config:
    return load_config(path, ENV)


def _config(text: str = BASE, env: Mapping[str, str] = ENV) -> Config:
    return parse_config(text, "t.yaml", env)


# -- noticing a change


def test_file_watch_sees_an_edit_a_rename_and_a_symlink_swap(tmp_path: Path) -> None:
    target = tmp_path / "plano.yaml"
    target.write_text("a: 1\n")
    watch = FileWatch([str(target)])
    assert not watch.changed()
    target.write_text("a: 22\n")  # in place, another size
    assert watch.changed() and not watch.changed()
    temp = tmp_path / "new"
    temp.write_text("a: 22\n")
    os.replace(temp, target)  # same size, another inode
    assert watch.changed()
    # A ConfigMap: the mounted path resolves through ..data, which kubelet swaps.
    for version in ("..v1", "..v2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "plano.yaml").write_text("a: 1\n")
    (tmp_path / "..data").symlink_to("..v1")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "..data" / "plano.yaml")
    os.replace(link, target)
    assert watch.changed()
    # Same size and mtime in the new folder: the swap alone is what is seen.
    old = os.stat(tmp_path / "..v1" / "plano.yaml")
    os.utime(tmp_path / "..v2" / "plano.yaml", ns=(old.st_atime_ns, old.st_mtime_ns))
    (tmp_path / "..data.tmp").symlink_to("..v2")
    os.replace(tmp_path / "..data.tmp", tmp_path / "..data")
    assert watch.changed()
    target.unlink()
    assert watch.changed()  # gone is a change too (the next load says why)


def test_file_watch_looks_at_the_files_it_is_given() -> None:
    seen: dict[str, Any] = {"a": 1, "b": 1}
    watch = FileWatch(["a", "b"], identify=lambda p: ("x", 0, seen[p], 0))
    seen["b"] = 2
    assert watch.changed()
    watch.watch(["a"])
    seen["b"] = 3
    assert not watch.changed()


# -- keys from files


def test_a_key_is_read_from_VAR_FILE_when_VAR_is_unset(tmp_path: Path) -> None:
    key = tmp_path / "openai"
    key.write_text("sk-from-file\n")
    config = _config(env={"OPENAI_API_KEY_FILE": str(key), "ANTHROPIC_API_KEY": "a"})
    assert config.providers[0].access_key == "sk-from-file"  # no trailing newline
    assert config.key_files == (str(key),)
    assert not config.warnings[:1] or "OPENAI_API_KEY" not in config.warnings[0]
    # The variable itself wins when both are set.
    both = _config(env={**ENV, "OPENAI_API_KEY_FILE": str(key)})
    assert both.providers[0].access_key == "o" and both.key_files == ()


def test_an_unreadable_key_file_is_a_located_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(env={"OPENAI_API_KEY_FILE": str(tmp_path / "absent"), "ANTHROPIC_API_KEY": "a"})
    (error,) = [e for e in caught.value.errors if "OPENAI_API_KEY_FILE" in e]
    assert error.startswith("t.yaml:8: llm_providers[0].access_key: OPENAI_API_KEY_FILE=")
    assert "cannot read the key" in error


def test_an_empty_key_file_is_an_unset_key(tmp_path: Path) -> None:
    key = tmp_path / "openai"
    key.write_text("\n")
    config = _config(env={"OPENAI_API_KEY_FILE": str(key), "ANTHROPIC_API_KEY": "a"})
    assert config.providers[0].access_key is None
    assert config.providers[0].missing_vars == ("OPENAI_API_KEY",)


# -- what a reload takes and refuses


def test_check_refuses_a_broken_file_with_located_errors(tmp_path: Path) -> None:
    path = tmp_path / "plano.yaml"
    path.write_text(BASE)
    current = load_config(path, ENV)
    path.write_text(BASE.replace("port: 12000", "port: 12000\n    timeout: soon"))
    refused = check(str(path), current, lambda p: load_config(p, ENV))
    assert isinstance(refused, Refused)
    assert refused.errors[0].startswith(f"{path}:6: listeners.egress_traffic.timeout")
    path.write_text(BASE + EXTRA)
    taken = check(str(path), current, lambda p: load_config(p, ENV))
    assert isinstance(taken, Config) and len(taken.providers) == 3


def test_a_listener_move_needs_a_restart() -> None:
    old, moved = _config(), _config(BASE.replace("12000", "12001"))
    (problem,) = restart_needed(old, moved)
    assert "127.0.0.1:12000 to 127.0.0.1:12001" in problem and "restart" in problem
    assert restart_needed(old, _config(BASE + EXTRA)) == []
    # Whatever else changes Envoy's listener: replacing it would cut the requests in flight.
    slower = _config(BASE.replace("port: 12000", "port: 12000\n    timeout: 90s"))
    (problem,) = restart_needed(old, slower)
    assert "settings changed (timeout_s)" in problem and "restart" in problem
    azure = _config(
        BASE
        + """  - model: azure_openai/my-deployment
    access_key: $NEW_KEY
    base_url: https://x.openai.azure.com
"""
    )
    (problem,) = restart_needed(old, azure)
    assert "Azure OpenAI" in problem


def test_envoy_keeps_what_was_removed_and_takes_what_was_added() -> None:
    small, big = _config(), _config(BASE + EXTRA)
    assert retained(small, big) is big
    kept = retained(big, small)
    assert [p.name for p in kept.providers] == [p.name for p in big.providers]
    assert kept.aliases == small.aliases  # only routes and clusters are kept


def test_the_server_waits_for_envoy_only_for_what_envoy_lacks() -> None:
    small, big = _config(), _config(BASE + EXTRA)
    assert needs_envoy_first(small, big)  # a new provider: Envoy first
    assert not needs_envoy_first(big, small)  # a removal: the server first
    rotated = _config(env={**ENV, "OPENAI_API_KEY": "o2"})
    assert not needs_envoy_first(small, rotated)  # a key: the server alone


class _Envoy:
    """Stands in for Envoy's side: records what it was given."""

    def __init__(self) -> None:
        self.given: list[Config] = []
        self.ok = True

    def apply(self, config: Config) -> bool:
        self.given.append(config)
        return self.ok


def test_envoy_reloader_orders_the_switch_and_trims_later(tmp_path: Path) -> None:
    path = tmp_path / "plano.yaml"
    path.write_text(BASE)
    now = [0.0]
    envoy, events = _Envoy(), []

    def apply(config: Config) -> bool:
        events.append(("envoy", len(config.providers)))
        return envoy.apply(config)

    reloader = EnvoyReloader(
        load(path),
        apply,
        load,
        switched=lambda: events.append(("server", 0)),
        clock=lambda: now[0],
        hold_s=30,
        background=False,
    )
    path.write_text(BASE + EXTRA)  # an addition: Envoy, then the server
    now[0] = 1
    reloader.tick()
    assert events == [("envoy", 3), ("server", 0)]
    events.clear()
    path.write_text(BASE)  # a removal: the server, Envoy keeping the provider
    now[0] = 2
    reloader.tick()
    assert events == [("server", 0), ("envoy", 3)] or events == [("server", 0)]
    events.clear()
    now[0] = 31
    reloader.tick()
    assert events == []  # not yet
    now[0] = 33
    reloader.tick()
    assert events == [("envoy", 2)]
    events.clear()
    path.write_text("listeners: [")  # refused: nothing happens
    now[0] = 34
    reloader.tick()
    assert events == []
    reloader.hangup._raised = True  # SIGHUP: read again though nothing changed
    path.write_text(BASE + EXTRA)
    reloader.tick()
    assert events == [("envoy", 3), ("server", 0)]


def test_envoy_reloader_owes_the_switch_when_envoy_refuses(tmp_path: Path) -> None:
    path = tmp_path / "plano.yaml"
    path.write_text(BASE)
    envoy, switched = _Envoy(), []
    now = [0.0]
    reloader = EnvoyReloader(
        load(path),
        envoy.apply,
        load,
        lambda: switched.append(1),
        lambda: now[0],
        background=False,
    )
    envoy.ok = False
    path.write_text(BASE + EXTRA)
    now[0] = 1
    reloader.tick()
    assert switched == []  # the server must not send to a provider Envoy lacks
    envoy.ok = True
    reloader.hangup._raised = True
    reloader.tick()
    assert switched == [1]


# -- the server's swap


class _Service:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_live_config_swaps_for_new_streams_and_reuses_the_router(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plano_extproc.extproc import live as live_module

    monkeypatch.setattr(live_module, "RETIRE_S", 0.0)
    path = tmp_path / "plano.yaml"
    routes = """  - model: openai/gpt-5
    access_key: $OPENAI_API_KEY
    routing_preferences:
      - name: code
        description: writing code
"""
    path.write_text(BASE + routes)
    installed: list[tuple[Config, Any]] = []
    built: list[Config] = []

    def build(config: Config) -> Any:
        built.append(config)
        return _Service(f"router {len(built)}")

    def streams(config: Config, service: Any) -> Any:  # a stand-in: the pair it is made of
        return (config, service)

    first = _Service("router 0")
    live = LiveConfig(
        load(path),
        first,  # type: ignore[arg-type]
        streams,
        installed.append,  # type: ignore[arg-type]
        load,
        build,
    )

    async def run() -> None:
        live.serve()
        assert installed[-1] == (live.config, first)
        # A key and an alias change: the router is kept.
        path.write_text(BASE.replace("$OPENAI_API_KEY", "${NEW_KEY}") + routes)
        assert await live.reload()
        assert installed[-1][1] is first and built == []
        assert installed[-1][0].providers[0].access_key == "n"
        # Unchanged: nothing to do.
        assert not await live.reload()
        # A route's description: a new router, built before the switch.
        path.write_text(BASE + routes.replace("writing code", "writing and fixing code"))
        assert await live.reload()
        assert built == [installed[-1][0]] and installed[-1][1].name == "router 1"
        await asyncio.sleep(0.01)
        assert first.closed  # the replaced router is closed once no decision can wait on it
        assert not installed[-1][1].closed
        # Broken: refused, the last good config stays installed.
        before = len(installed)
        path.write_text("llm_providers: 3\n")
        assert not await live.reload()
        assert len(installed) == before and live.reloads == 2

    asyncio.run(run())


# -- the dynamic bootstrap


def test_the_dynamic_bootstrap_holds_what_the_static_one_holds(tmp_path: Path) -> None:
    config = _config(BASE + EXTRA)
    options = EnvoyOptions(admin_port=9901, ready_port=9902)
    dynamic = render_dynamic(config, tmp_path, options)
    boot = yaml.safe_load(dynamic.bootstrap)
    static = boot["static_resources"]
    assert [lis["name"] for lis in static["listeners"]] == ["ready"]
    assert {c["name"] for c in static["clusters"]} == {"plano_extproc", "plano_admin"}
    assert boot["dynamic_resources"]["lds_config"]["path_config_source"] == {
        "path": str(tmp_path / LDS_FILE),
        "watched_directory": {"path": str(tmp_path)},
    }
    (listener,) = yaml.safe_load(dynamic.xds[LDS_FILE])["resources"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert manager["rds"]["route_config_name"] == "plano" and "route_config" not in manager
    clusters = yaml.safe_load(dynamic.xds[CDS_FILE])["resources"]
    assert {c["name"] for c in clusters} == set(config.clusters)
    # Put back together, it is the static bootstrap.
    assert _normalized(yaml.safe_load(inlined(dynamic))) == _normalized(
        render_bootstrap(config, options)
    )
    write_xds(tmp_path, dynamic.xds)  # the bootstrap names them: they must exist
    validate_with_envoy(dynamic.bootstrap)
    validate_with_envoy(inlined(dynamic))


def _normalized(boot: dict[str, Any]) -> Any:
    """In one order: the static bootstrap lists clusters in its own."""
    boot = yaml.safe_load(yaml.safe_dump(boot))
    for kind in ("listeners", "clusters"):
        boot["static_resources"][kind].sort(key=lambda item: item["name"])
    return boot


def test_write_xds_writes_changed_files_whole(tmp_path: Path) -> None:
    xds = tmp_path / "xds"
    xds.mkdir()
    first = render_dynamic(_config(), xds)
    assert write_xds(xds, first.xds) == [CDS_FILE, RDS_FILE, LDS_FILE]
    assert write_xds(xds, first.xds) == []
    second = render_dynamic(_config(BASE + EXTRA), xds)
    assert write_xds(xds, second.xds) == [CDS_FILE, RDS_FILE]  # the listener is the same
    assert version_of((xds / RDS_FILE).read_text()) == version_of(second.xds[RDS_FILE])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xds"]  # no temporary file left
