"""Envoy's own per-request stats for the metrics endpoint: requests by decision and status
class, upstream latency and time to first byte by provider.

Only Envoy sees a response's status and the upstream's timing together with the decision (the
server ends its gRPC call with the decision, before the provider answers). Envoy's stats
access logger (``envoy.access_loggers.stats``) counts each request as it ends, in C++, with
tags read from the decision's dynamic metadata: no second gRPC stream, no log line, nothing
per request in Python. Every tag value is bounded by the config: the decision's entry
(``plano.provider``: a configured name, a wildcard's own ``provider/*`` and never the model
id a client chose), its routing (four values), its route (a configured name), the upstream
cluster (named from the config), and the status class (a rule maps the code to ``2xx``...).
A request with no decision (refused by the server or answered by Envoy alone) has ``none``.
"""

from __future__ import annotations

from envoy_data_plane.envoy.config.accesslog import v3 as accesslog
from envoy_data_plane.envoy.extensions.access_loggers.filters.cel import v3 as cel
from envoy_data_plane.envoy.extensions.access_loggers.stats import v3 as stats
from envoy_data_plane.envoy.extensions.filters.http.json_to_metadata import v3 as json_to_metadata
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm
from envoy_data_plane.envoy.extensions.matching.actions.transform_stat import v3 as transform
from envoy_data_plane.envoy.extensions.matching.common_inputs.stats import v3 as stat_input
from envoy_data_plane.envoy.type import v3 as type_v3
from envoy_data_plane.envoy.type.matcher.v3 import (
    MetadataMatcher,
    MetadataMatcherPathSegment,
    ValueMatcher,
)
from envoy_data_plane.google.protobuf import Any
from envoy_data_plane.xds.core import v3 as xcore
from envoy_data_plane.xds.type.matcher import v3 as xmatcher

from ..wire import PROVIDER_KEY, ROUTE_KEY, ROUTING_KEY
from .common import http_filter, metadata_value

# The stats' names: Envoy's Prometheus output names them envoy_plano_<name>.
STATS_PREFIX = "plano"
REQUESTS = "requests"
UPSTREAM_TIME = "upstream_time_ms"
UPSTREAM_TTFB = "upstream_ttfb_ms"
INPUT_TOKENS = "input_tokens"
OUTPUT_TOKENS = "output_tokens"
# Where Envoy puts the token counts it reads from a provider's JSON answer: not the decision's
# namespace (which holds the key), one of its own.
USAGE_NAMESPACE = "plano_usage"
TOKEN_USAGE_FILTER = "plano.token_usage"
# The counts each API's answer reports: OpenAI's usage.prompt_tokens/completion_tokens,
# Anthropic's usage.input_tokens/output_tokens.
_USAGE_FIELDS = (
    ("prompt_tokens", INPUT_TOKENS),
    ("completion_tokens", OUTPUT_TOKENS),
    ("input_tokens", INPUT_TOKENS),
    ("output_tokens", OUTPUT_TOKENS),
)
# Tags: the decision's, and the upstream's.
MODEL_TAG, ROUTING_TAG, ROUTE_TAG, STATUS_TAG, PROVIDER_TAG = (
    "model",
    "routing",
    "route",
    "status_class",
    "provider",
)
# A tag's value where there is none: no decision, no route, no response.
NONE = "none"
# From the first upstream byte sent to the first (time to first byte) and last byte received.
_UPSTREAM_TTFB = "%COMMON_DURATION(US_TX_BEG:US_RX_BEG:ms)%"
_UPSTREAM_TIME = "%COMMON_DURATION(US_TX_BEG:US_RX_END:ms)%"


def _update(value: str) -> xmatcher.MatcherOnMatch:
    return xmatcher.MatcherOnMatch(
        action=xcore.TypedExtensionConfig(
            name="transform_stat",
            typed_config=Any.pack(
                transform.TransformStat(
                    update_tag=transform.TransformStatUpdateTag(new_tag_value=value)
                )
            ),
        )
    )


def _when(match: xmatcher.StringMatcher, value: str) -> xmatcher.MatcherMatcherListFieldMatcher:
    """A rule: a tag value ``match`` matches becomes ``value``."""
    tag_value = xcore.TypedExtensionConfig(
        name="stat_tag_value", typed_config=Any.pack(stat_input.StatTagValueInput())
    )
    return xmatcher.MatcherMatcherListFieldMatcher(
        predicate=xmatcher.MatcherMatcherListPredicate(
            single_predicate=xmatcher.MatcherMatcherListPredicateSinglePredicate(
                input=tag_value, value_match=match
            )
        ),
        on_match=_update(value),
    )


def _status_class_rules() -> xmatcher.Matcher:
    """``%RESPONSE_CODE%`` to its class (``1xx``..``5xx``), anything else (``0``: no response
    was sent) to ``none``: five values and one, whatever the code."""
    matchers = [_when(xmatcher.StringMatcher(prefix=str(n)), f"{n}xx") for n in range(1, 6)]
    return xmatcher.Matcher(
        matcher_list=xmatcher.MatcherMatcherList(matchers=matchers), on_no_match=_update(NONE)
    )


def _absent_is_none() -> xmatcher.Matcher:
    """A decision's key that is absent (no decision; no route) reads ``none``, not empty."""
    return xmatcher.Matcher(
        matcher_list=xmatcher.MatcherMatcherList(
            matchers=[_when(xmatcher.StringMatcher(exact=""), NONE)]
        )
    )


def decision_stats(tokens: bool = False) -> list[accesslog.AccessLog]:
    """The access log entries that count every request of the gateway listener: each a stats
    logger of its own, so that the upstream's times are read only where there was an upstream
    and the token counts (``tokens``: read by ``token_usage_filter``) only where the answer
    reported them (a value that is not a number is an error in Envoy's log)."""
    decision_tags = [
        stats.ConfigTag(name=tag, value_format=metadata_value(key), rules=_absent_is_none())
        for tag, key in (
            (MODEL_TAG, PROVIDER_KEY),
            (ROUTING_TAG, ROUTING_KEY),
            (ROUTE_TAG, ROUTE_KEY),
        )
    ]
    status = stats.ConfigTag(
        name=STATUS_TAG, value_format="%RESPONSE_CODE%", rules=_status_class_rules()
    )
    requests = stats.ConfigCounter(
        stat=stats.ConfigStat(name=REQUESTS, tags=[*decision_tags, status]), value_fixed=1
    )
    provider = [stats.ConfigTag(name=PROVIDER_TAG, value_format="%UPSTREAM_CLUSTER%")]
    upstream = [
        stats.ConfigHistogram(
            stat=stats.ConfigStat(name=name, tags=provider),
            unit=stats.ConfigHistogramUnit.Milliseconds,
            value_format=value,
        )
        for name, value in ((UPSTREAM_TIME, _UPSTREAM_TIME), (UPSTREAM_TTFB, _UPSTREAM_TTFB))
    ]
    counts = [
        stats.ConfigCounter(
            stat=stats.ConfigStat(name=count, tags=decision_tags[:1]),
            value_format=f"%DYNAMIC_METADATA({USAGE_NAMESPACE}:{count})%",
        )
        for count in (INPUT_TOKENS, OUTPUT_TOKENS)
    ]
    reported = accesslog.AccessLogFilter(
        metadata_filter=accesslog.MetadataFilter(
            matcher=MetadataMatcher(
                filter=USAGE_NAMESPACE,
                path=[MetadataMatcherPathSegment(key=INPUT_TOKENS)],
                value=ValueMatcher(present_match=True),
            ),
            match_if_key_not_found=False,
        )
    )
    return [
        _stats_logger(stats.Config(stats_scope=_scope(), counters=[requests])),
        _stats_logger(stats.Config(stats_scope=_scope(), histograms=upstream), _UPSTREAM_SEEN),
        *(
            [_stats_logger(stats.Config(stats_scope=_scope(), counters=counts), reported)]
            if tokens
            else []
        ),
    ]


def _scope() -> type_v3.Scope:
    return type_v3.Scope(prefix=STATS_PREFIX)


# A request an upstream answered (or began to): the others have no upstream times.
_UPSTREAM_SEEN = accesslog.AccessLogFilter(
    extension_filter=accesslog.ExtensionFilter(
        name="envoy.access_loggers.extension_filters.cel",
        typed_config=Any.pack(cel.ExpressionFilter(expression="has(upstream.address)")),
    )
)


def _stats_logger(
    config: stats.Config, only: accesslog.AccessLogFilter | None = None
) -> accesslog.AccessLog:
    return accesslog.AccessLog(
        name="envoy.access_loggers.stats", filter=only, typed_config=Any.pack(config)
    )


def token_usage_filter() -> hcm.HttpFilter:
    """Reads the token counts of a provider's JSON answer (not a stream's) into metadata for
    the token counters, in Envoy: the server never sees an untranslated answer."""

    def rule(field: str, key: str) -> json_to_metadata.JsonToMetadataRule:
        return json_to_metadata.JsonToMetadataRule(
            selectors=[
                json_to_metadata.JsonToMetadataSelector(key="usage"),
                json_to_metadata.JsonToMetadataSelector(key=field),
            ],
            on_present=json_to_metadata.JsonToMetadataKeyValuePair(
                metadata_namespace=USAGE_NAMESPACE,
                key=key,
                type=json_to_metadata.JsonToMetadataValueType.NUMBER,
            ),
        )

    rules = json_to_metadata.JsonToMetadataMatchRules(
        rules=[rule(field, key) for field, key in _USAGE_FIELDS],
        allow_content_types=["application/json"],
    )
    return http_filter(TOKEN_USAGE_FILTER, json_to_metadata.JsonToMetadata(response_rules=rules))
