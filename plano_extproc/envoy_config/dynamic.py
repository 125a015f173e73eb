"""The bootstrap in two parts for a gateway whose config reloads: a static part Envoy reads once
(admin, the ext_proc cluster, the readiness listener, the overload manager) and three xDS files
it watches (the gateway listener by LDS, its route table by RDS, the provider clusters by CDS).

Both parts are cut from ``render_bootstrap``'s output, so they hold exactly what the static
bootstrap holds. The route table travels by RDS of its own: a change of routes (the usual
change: a provider, an alias, a key's header) then leaves the listener as it was, where a
listener change would drain its connections. Envoy re-reads a file when a file is moved into
its watched directory: ``write_xds`` writes each beside it, then renames it in.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import betterproto2
import pydantic_core
import yaml

from ..config import Config
from .clusters import EXTPROC_CLUSTER
from .common import HCM_FILTER
from .options import DEFAULTS, EnvoyOptions
from .ready import ADMIN_CLUSTER, READY_LISTENER

# A reload renders the config while Envoy serves, on a busy machine: betterproto2 redoes two
# things per message on every to_dict/parse/serialization that never change for a class. Its
# type hints (a third of a render) and its pydantic validator (built anew for every
# validation: another third) are made once per class instead; every message is still
# validated as before.
_message: Any = betterproto2.Message
if hasattr(_message, "_type_hints") and not hasattr(_message._type_hints, "cache_info"):
    _cached_hints: Any = functools.cache(_message._type_hints.__func__)
    _message._type_hints = classmethod(_cached_hints)


@functools.cache
def _validator(cls: type) -> pydantic_core.SchemaValidator:
    return pydantic_core.SchemaValidator(cls.__pydantic_core_schema__)  # type: ignore[attr-defined]


def _validate(self: Any) -> None:
    if not self._is_pydantic():
        raise TypeError("Validation is only available for pydantic dataclasses.")
    fields = self.__dict__.copy()
    del fields["_unknown_fields"]
    _validator(self.__class__).validate_python(fields)


# Only over the betterproto2 this was written against (0.9's Message._validate and
# _is_pydantic): another version keeps its own, slower but correct.
if hasattr(_message, "_validate") and hasattr(_message, "_is_pydantic"):
    _message._validate = _validate


# The folder of the xDS files, beside the bootstrap; and the files, by what each holds.
XDS_DIR = "xds"
LDS_FILE, RDS_FILE, CDS_FILE = "lds.json", "rds.json", "cds.json"
XDS_FILES = (CDS_FILE, RDS_FILE, LDS_FILE)
_STATIC_CLUSTERS = {EXTPROC_CLUSTER, ADMIN_CLUSTER}
_TYPES = {
    LDS_FILE: "type.googleapis.com/envoy.config.listener.v3.Listener",
    RDS_FILE: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    CDS_FILE: "type.googleapis.com/envoy.config.cluster.v3.Cluster",
}


@dataclass(frozen=True)
class Dynamic:
    """A bootstrap that reads the gateway's listener, routes and clusters from ``xds``
    (file name -> its YAML text) in the folder ``xds_dir``."""

    bootstrap: str
    xds: Mapping[str, str]


def _source(xds_dir: Path, name: str) -> dict[str, object]:
    return {
        "path_config_source": {
            "path": str(xds_dir / name),
            "watched_directory": {"path": str(xds_dir)},
        },
        "resource_api_version": "V3",
    }


def _dump(value: object) -> str:
    # libyaml's emitter where PyYAML has it: the pure-Python one takes a tenth of a second
    # for a config's routes.
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(value, Dumper=dumper, sort_keys=False)


def _resources(name: str, items: list[dict[str, Any]]) -> str:
    # JSON, which Envoy reads as it reads YAML: writing a config's routes as YAML takes a
    # tenth of a second or more, as JSON a few milliseconds.
    resources = [{"@type": _TYPES[name], **item} for item in items]
    body = json.dumps(resources, separators=(",", ":"))
    # A digest of the content: Envoy shows the version it applied (the version_text stats),
    # which is how a reload knows its change is live.
    version = hashlib.sha256(body.encode()).hexdigest()[:16]
    return json.dumps({"version_info": version, "resources": resources}, indent=1)


def version_of(text: str) -> str:
    return str(json.loads(text)["version_info"])


# The stats where Envoy shows the version of each file it applied.
VERSION_STATS = {
    CDS_FILE: "cluster_manager.cds.version_text",
    LDS_FILE: "listener_manager.lds.version_text",
}


def version_stat(name: str, route_config: str = "plano") -> str:
    if name == RDS_FILE:
        from . import LISTENER_STAT_PREFIX

        return f"http.{LISTENER_STAT_PREFIX}.rds.{route_config}.version_text"
    return VERSION_STATS[name]


def split_bootstrap(static: Mapping[str, Any], xds_dir: Path) -> Dynamic:
    """``static`` (``render_bootstrap``'s output) with its gateway listener, route table and
    provider clusters moved to xDS files in ``xds_dir``."""
    boot = dict(static)  # render_bootstrap's own: changed in place
    resources = boot["static_resources"]
    listeners = resources["listeners"]
    gateway = [lis for lis in listeners if lis["name"] != READY_LISTENER]
    clusters = resources["clusters"]
    dynamic_clusters = [c for c in clusters if c["name"] not in _STATIC_CLUSTERS]
    resources["listeners"] = [lis for lis in listeners if lis["name"] == READY_LISTENER]
    resources["clusters"] = [c for c in clusters if c["name"] in _STATIC_CLUSTERS]
    routes = []
    for lis in gateway:
        for chain in lis["filter_chains"]:
            for f in chain["filters"]:
                if f["name"] == HCM_FILTER and "route_config" in f["typed_config"]:
                    table = f["typed_config"].pop("route_config")
                    routes.append(table)
                    f["typed_config"]["rds"] = {
                        "config_source": _source(xds_dir, RDS_FILE),
                        "route_config_name": table["name"],
                    }
    # Envoy requires a node to take any xDS, file-based included.
    boot["node"] = {"id": "plano", "cluster": "plano"}
    boot["dynamic_resources"] = {
        "lds_config": _source(xds_dir, LDS_FILE),
        "cds_config": _source(xds_dir, CDS_FILE),
    }
    xds = {
        CDS_FILE: _resources(CDS_FILE, dynamic_clusters),
        RDS_FILE: _resources(RDS_FILE, routes),
        LDS_FILE: _resources(LDS_FILE, gateway),
    }
    return Dynamic(_dump(boot), xds)


def render_dynamic(config: Config, xds_dir: Path, options: EnvoyOptions = DEFAULTS) -> Dynamic:
    from . import render_bootstrap

    return split_bootstrap(render_bootstrap(config, options), xds_dir)


def inlined(dynamic: Dynamic) -> str:
    """The dynamic bootstrap with its xDS files put back in: a static bootstrap that
    ``envoy --mode validate`` checks whole (validate mode reads no xDS file)."""
    boot = cast(dict[str, Any], yaml.safe_load(dynamic.bootstrap))
    boot.pop("dynamic_resources")
    boot.pop("node")
    resources = boot["static_resources"]
    table = {r["name"]: r for r in json.loads(dynamic.xds[RDS_FILE])["resources"] if r.pop("@type")}
    for lis in json.loads(dynamic.xds[LDS_FILE])["resources"]:
        lis.pop("@type")
        for chain in lis["filter_chains"]:
            for f in chain["filters"]:
                rds = f["typed_config"].pop("rds", None)
                if rds is not None:
                    f["typed_config"]["route_config"] = table[rds["route_config_name"]]
        resources["listeners"].insert(0, lis)
    for cluster in json.loads(dynamic.xds[CDS_FILE])["resources"]:
        cluster.pop("@type")
        resources["clusters"].append(cluster)
    return yaml.safe_dump(boot, sort_keys=False)


def write_xds(
    xds_dir: Path, files: Mapping[str, str], order: tuple[str, ...] = XDS_FILES
) -> list[str]:
    """Write the files whose content changed, each whole and at once (a temporary file in
    the same folder, renamed over the old: Envoy never reads half a file), in ``order``:
    clusters before the routes that name them, routes before the listener. The names
    written."""
    written = []
    for name in order:
        target = xds_dir / name
        text = files[name]
        try:
            if target.read_text() == text:
                continue
        except FileNotFoundError:
            pass
        fd, temp = tempfile.mkstemp(dir=xds_dir.parent, prefix=f".{name}.")
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temp, target)
        written.append(name)
    return written
