"""The router's tuned constants that a benchmark run may set instead of embedded's, so that
every figure a tuning run tried can be had again by a command (bench/RESULTS.md cites them).

    add(parser, "follow_up_boost", "lexical_weight")  ->  --follow-up-boost B --lexical-weight W
    apply(args)  # before the router is built
"""

from __future__ import annotations

import argparse

from plano_extproc.router import embedded

# option name -> (the embedded constant it sets, what its value means)
CONSTANTS = {
    "other_bias": ("OTHER_BIAS", "how far 'other' is moved in the pooled vote"),
    "assistant_weight": ("ASSISTANT_WEIGHT", "an assistant turn's share of the context"),
    "follow_up_boost": (
        "FOLLOW_UP_BOOST",
        "the context's extra weight after a short turn; 0: none",
    ),
    "lexical_weight": ("LEXICAL_WEIGHT", "the description words' weight; 0: none"),
    "exemplar_weight": (
        "EXEMPLAR_WEIGHT",
        "the nearest training requests' votes' weight; 0: none",
    ),
    "skip_share": ("SKIP_SHARE", "MiniLM's vote share under which it is not run; 0: always run"),
}


def add(parser: argparse.ArgumentParser, *names: str) -> None:
    for name in names:
        constant, meaning = CONSTANTS[name]
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=float,
            help=f"instead of embedded.{constant} ({getattr(embedded, constant)}): {meaning}",
        )


def apply(args: argparse.Namespace) -> None:
    for name, (constant, _) in CONSTANTS.items():
        value = getattr(args, name, None)
        if value is not None:
            setattr(embedded, constant, value)
