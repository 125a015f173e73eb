"""Preference routing: read a conversation, pick the route that fits the latest intent.

``load_router`` builds the router a config asks for (the embedded encoder by default, or
Arch-Router); ``RouterService`` runs it off the event loop with a deadline. The backends
import onnxruntime lazily, so commands that never route do not pay for it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import Config
from .base import OTHER, RouteChoice, Router, RouterLoadError

__all__ = ["OTHER", "RouteChoice", "Router", "RouterLoadError", "default_models_dir", "load_router"]


def default_models_dir() -> Path:
    """Where ``make`` builds the embedded model: $PLANO_MODELS_DIR, else the repo's build/."""
    override = os.environ.get("PLANO_MODELS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "build" / "models"


def load_router(config: Config) -> Router | None:
    """The router for ``config``; None when no request can need one (no routes)."""
    routes = config.routes
    if not routes:
        return None
    settings = config.router
    if settings.kind == "arch":
        from .arch import ArchRouter

        assert settings.model_dir is not None  # the config parser requires it for arch
        return _warmed(ArchRouter.load(settings.model_dir, routes, settings))
    from .embedded import EncoderRouter

    return _warmed(EncoderRouter.load(default_models_dir(), routes, settings))


def _warmed(router: Router) -> Router:
    # onnxruntime finishes setting up a session on its first run: doing that here keeps the
    # first request's decision from missing its deadline.
    router.choose([{"role": "user", "content": "warm up"}])
    return router
