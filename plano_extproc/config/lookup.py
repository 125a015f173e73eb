"""What a model name means: which provider entry serves it, and with which model id. Pure.

The same rules place a client's ``model`` (resolve.py) and an alias's or a route's target
(the parser): a configured ``provider/model-id``; a bare model id that one configured entry
has; ``provider/<any id>`` when ``provider/*`` is configured; and a bare id no entry claims,
for the wildcard whose provider's model families it belongs to (or the only wildcard).
Explicit entries always win over wildcards.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..upstreams.builtin import family_owner
from .model import WILDCARD, Provider, Target

# A model id a wildcard passes on: it ends up in the body, a response header and (Azure) the
# path, so it is printable ASCII without spaces, and of a sane length.
_MODEL_ID = re.compile(r"[\x21-\x7e]{1,256}")
# Azure OpenAI deployment names: letters, digits, '-', '_' and '.', at most 64, starting with
# a letter or digit (so never "." or "..", which would climb the deployment path).
DEPLOYMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


# A model placed: its provider entry and the model id it receives (the entry's own, or a
# wildcard's pick). The same pair as a chain member.
Found = Target


@dataclass(frozen=True)
class NotFound:
    # Several entries could serve it (empty: none can): the client must say which.
    candidates: tuple[str, ...] = ()
    # Why a wildcard cannot pass this id on (None: no wildcard was asked).
    bad_id: str | None = None
    # A bare id of no known model family, with several wildcards that could each take it.
    unclaimed: tuple[str, ...] = ()


def lookup(
    model: str,
    by_name: Mapping[str, Provider],
    by_model_id: Mapping[str, tuple[Provider, ...]],
    wildcards: Mapping[str, Provider],
) -> Found | NotFound:
    provider = by_name.get(model)
    if provider is not None and not provider.wildcard:
        return Found(provider, provider.model_id)
    prefix, slash, rest = model.partition("/")
    if slash and prefix in wildcards:
        # openai/<id> with openai/* configured means OpenAI's <id>, even when another
        # provider's entry has that whole string as its id (groq/openai/gpt-oss-120b).
        return _through(wildcards[prefix], rest)
    explicit = by_model_id.get(model, ())
    if len(explicit) == 1:
        return Found(explicit[0], explicit[0].model_id)
    if explicit:
        return NotFound(tuple(p.name for p in explicit))
    if not wildcards:
        return NotFound()
    if model == WILDCARD:
        return NotFound(bad_id="'*' stands for any model id: name one")
    if not _MODEL_ID.fullmatch(model):
        return NotFound(bad_id=_BAD_ID)
    owners = [w for w in wildcards.values() if model.startswith(w.families)]
    if len(owners) == 1:
        return _through(owners[0], model)
    if len(owners) > 1:
        return NotFound(tuple(f"{w.provider}/{model}" for w in owners))
    if len(wildcards) == 1:
        (only,) = wildcards.values()
        owner = family_owner(model)
        if only.families and owner is not None:
            # A first-party provider's wildcard (anthropic/*) serves its own models only:
            # gpt-4o is OpenAI's, and would be a wrong route there.
            return NotFound(
                bad_id=f"it is one of {owner}'s models, and {owner} has no {owner}/* here"
            )
        return _through(only, model)
    return NotFound(unclaimed=tuple(w.name for w in wildcards.values()))


def _through(wildcard: Provider, model_id: str) -> Found | NotFound:
    problem = bad_model_id(wildcard, model_id)
    return NotFound(bad_id=problem) if problem else Found(wildcard, model_id)


BAD_DEPLOYMENT = (
    "an Azure OpenAI deployment name is 1-64 letters, digits, '-', '_' or '.', starting "
    "with a letter or digit"
)
_BAD_ID = "a model id is 1-256 printable ASCII characters without spaces"


def bad_model_id(wildcard: Provider, model_id: str) -> str | None:
    """Why ``wildcard`` cannot send ``model_id`` on, or None."""
    if model_id == WILDCARD:
        return f"'{wildcard.name}' stands for any model id: name one, e.g. {wildcard.provider}/<id>"
    if wildcard.api_version is not None:
        if not DEPLOYMENT_NAME.fullmatch(model_id):
            return BAD_DEPLOYMENT
    elif not _MODEL_ID.fullmatch(model_id):
        return _BAD_ID
    return None
