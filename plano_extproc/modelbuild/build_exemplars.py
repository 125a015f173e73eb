"""Embed the adapters' training requests with each built encoder, for the router's exemplar
votes (router/exemplars.py), into ``exemplars.npz`` beside the encoder's model.

Generated data (2 MB an encoder), so built here rather than kept in git: ``make models``
runs it after the encoders (about a minute on 2 cores), and it is a no-op while the file's
``source`` (a hash of the encoder's build manifest and of the training files) is current,
so editing the training data or rebuilding an encoder re-embeds them.

    python -m plano_extproc.modelbuild.build_exemplars [--models-dir build/models]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

from ..config import DEFAULT_ROUTER
from ..router import exemplars
from ..router.embedded import DEFAULT_MEMBERS, Encoder
from . import train_adapter as ta
from .wheels import MANIFEST_NAME, exclusive, log

# Bump to re-embed every built encoder's exemplars (a change of how they are embedded).
RECIPE = 1


def source(model_dir: Path, data: Path = ta.DATA) -> str:
    """What a model directory's exemplars are embedded from: the recipe, the encoder's build
    manifest and the training routes' files."""
    digest = hashlib.sha256(f"recipe {RECIPE}\n".encode())
    for path in [model_dir / MANIFEST_NAME, *sorted(data.glob("train_*.jsonl"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def is_current(model_dir: Path) -> bool:
    try:
        with np.load(model_dir / exemplars.FILE_NAME) as stored:
            return str(stored["source"]) == source(model_dir)
    except (OSError, ValueError, KeyError):
        return False


def ensure_built(model_dir: Path, *, quiet: bool = False) -> Path:
    """``model_dir``'s exemplars, embedded first unless current (under a lock, written to a
    temporary file renamed into place, so a killed build never leaves half a file)."""
    target = model_dir / exemplars.FILE_NAME
    if is_current(model_dir):
        return target
    # The lock beside the model directory, as the encoders' builds keep theirs.
    with exclusive(model_dir.parent / f".{model_dir.name}.exemplars.lock"):
        if is_current(model_dir):
            return target
        log(f"embedding the training requests for {model_dir}", quiet)
        corpus = ta.read_corpus()
        encoder = Encoder(model_dir, DEFAULT_ROUTER)
        passages = [encoder.passage_prefix + t for t in corpus.descriptions]
        seen = ta.exemplars_of(
            corpus, ta.embed_queries(encoder, corpus.requests), encoder.embed(passages, 128)
        )
        partial = model_dir / f".{exemplars.FILE_NAME}.{os.getpid()}.npz"
        try:
            np.savez_compressed(partial, **exemplars.arrays(seen, source(model_dir)))
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=Path("build/models"))
    parser.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    args = parser.parse_args(argv)
    for spec in DEFAULT_MEMBERS:
        model_dir = args.models_dir / spec.name
        if not (model_dir / MANIFEST_NAME).is_file():
            print(f"{model_dir}: no built encoder (run make models first)", file=sys.stderr)
            return 1
        print(f"exemplars ready: {ensure_built(model_dir, quiet=args.quiet).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
