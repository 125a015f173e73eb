"""Envoy's side of a reload, on a running Envoy: the new config's xDS files written into its
watched folder, then its admin API read until it shows their versions (ops/reload.py says
when and in which order)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

from ..config import Config, load_config
from ..envoy_config.dynamic import (
    LDS_FILE,
    XDS_DIR,
    XDS_FILES,
    render_dynamic,
    version_of,
    version_stat,
    write_xds,
)
from ..envoy_runner import EnvoyProcess, admin_get
from .reload import EnvoyReloader, keyless_loader

log = logging.getLogger("plano_extproc.reload")

# Envoy applies a moved-in file within milliseconds; this is for a machine under load.
APPLY_TIMEOUT_S = 5.0
_TEXT_STAT = re.compile(r'^(\S+): "(.*)"$', re.MULTILINE)


def applied_versions(envoy: EnvoyProcess) -> dict[str, str]:
    """The version of each xDS resource set Envoy runs (its version_text stats)."""
    try:
        status, body = admin_get(envoy.options, "/stats?filter=version_text$")
    except OSError:
        return {}
    return dict(_TEXT_STAT.findall(body.decode())) if status == 200 else {}


def xds_applier(
    envoy: EnvoyProcess, xds_dir: Path, timeout_s: float = APPLY_TIMEOUT_S
) -> Callable[[Config], bool]:
    def apply(config: Config) -> bool:
        # Not run through envoy --mode validate first (1-2 s on a busy machine, most of a
        # reload's time): the renderer's output is what the tests validate, and Envoy keeps
        # the files it applied last if it refuses one (told below).
        dynamic = render_dynamic(config, xds_dir, envoy.options)
        files = dict(dynamic.xds)
        running = (xds_dir / LDS_FILE).read_text()
        if files[LDS_FILE] != running:
            # restart_needed refuses what changes the listener; should it miss something,
            # the listener stays as it is (a new one would cut the requests in flight).
            log.error("the new config changes Envoy's listener: kept as it was (restart)")
            files[LDS_FILE] = running
        write_xds(xds_dir, files)
        want = {version_stat(name): version_of(files[name]) for name in XDS_FILES}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            have = applied_versions(envoy)
            if all(have.get(stat) == version for stat, version in want.items()):
                return True
            time.sleep(0.01)
        log.error("Envoy did not apply the new xDS files within %g s: %s", timeout_s, have)
        return False

    return apply


def envoy_reloader(
    config: Config,
    envoy: EnvoyProcess,
    bootstrap: Path,
    keyless: bool,
    switched: Callable[[], None] = lambda: None,
) -> EnvoyReloader:
    """The reloader of an Envoy started on ``private_bootstrap``'s ``bootstrap``; SIGHUP
    reloads it. ``keyless``: Envoy alone, whose environment has no key."""
    reloader = EnvoyReloader(
        config,
        xds_applier(envoy, bootstrap.parent / XDS_DIR),
        keyless_loader() if keyless else load_config,
        switched,
    )
    reloader.hangup.install()
    return reloader
