"""Provider fallback in Envoy's terms (envoy/README.md, "Provider fallback").

Each fail-over chain (config.Chain) gets an aggregate cluster over one cluster per member, in
the chain's order, and its routes retry on the next member (``previous_priorities``) when one
fails. The aggregate's upstream filters run per attempt: they name the member Envoy chose
(its endpoint's metadata) in a request header, and an ext_proc stream readies the request for
that member (path, key, model, translation) unless it is the chain's primary on the first
attempt, which the decision readied already: the path that does not fail opens no stream.
Outlier detection on the member clusters skips a member that keeps failing, so requests do
not pay for finding out.
"""

from __future__ import annotations

from datetime import timedelta

from envoy_data_plane.envoy.config.cluster import v3 as cluster
from envoy_data_plane.envoy.config.common.mutation_rules import v3 as mutation_rules
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.route import v3 as route
from envoy_data_plane.envoy.extensions.clusters.aggregate import v3 as aggregate
from envoy_data_plane.envoy.extensions.common.matching import v3 as matching
from envoy_data_plane.envoy.extensions.filters.http.composite import v3 as composite
from envoy_data_plane.envoy.extensions.filters.http.ext_proc import v3 as ext_proc
from envoy_data_plane.envoy.extensions.filters.http.header_mutation import v3 as header_mutation
from envoy_data_plane.envoy.extensions.filters.http.upstream_codec import v3 as upstream_codec
from envoy_data_plane.envoy.extensions.retry.priority.previous_priorities import (
    v3 as previous_priorities,
)
from envoy_data_plane.envoy.extensions.upstreams.http import v3 as upstream_http
from envoy_data_plane.envoy.type.matcher.v3 import HttpRequestHeaderMatchInput
from envoy_data_plane.envoy.type.v3 import HttpStatus
from envoy_data_plane.google.protobuf import Any, Struct
from envoy_data_plane.xds.core import v3 as xds_core
from envoy_data_plane.xds.type.matcher import v3 as xds_matcher

from ..config import Chain, Config, Target
from ..wire import FALLBACK_METADATA, HOST_TARGET_HEADER, METADATA_NAMESPACE, SERVED_HEADER
from .clusters import circuit_breakers, provider_cluster
from .common import header, http_filter
from .filters import STATUS_ON_ERROR, grpc_service
from .options import EnvoyOptions

# Envoy's own request header that counts attempts (the virtual host asks for it): the
# upstream filters read it, and remove it before the request leaves.
ATTEMPT_COUNT_HEADER = "x-envoy-attempt-count"
# When a member counts as failing for a while: five 5xx in a row (Envoy's default count; its
# field name does not survive envoy-data-plane's snake casing), or three gateway failures
# (502, 503, 504, connect failures), eject it for 30 s, longer each time it is ejected again.
OUTLIER_DETECTION = cluster.OutlierDetection(
    consecutive_gateway_failure=3,
    enforcing_consecutive_gateway_failure=100,
    interval=timedelta(seconds=5),
    base_ejection_time=timedelta(seconds=30),
    max_ejection_percent=100,  # a member is one host: at the default 10 % none is ejected
)


def member_clusters(config: Config) -> dict[str, str]:
    """Every chain member's name -> the cluster that reaches it, in first-seen order."""
    names: dict[str, str] = {}
    for chain in config.chains.values():
        for member in chain.members:
            names.setdefault(member.name, f"member_{len(names) + 1}")
    return names


def chain_clusters(
    config: Config, options: EnvoyOptions, ca_bundle: str, limit: int
) -> list[cluster.Cluster]:
    """The member clusters, then one aggregate cluster per chain."""
    names = member_clusters(config)
    targets = {m.name: m for chain in config.chains.values() for m in chain.members}
    clusters = [_member_cluster(names[n], targets[n], ca_bundle, limit) for n in names]
    for chain in config.chains.values():
        clusters.append(_aggregate(chain, [names[m.name] for m in chain.members], options, limit))
    return clusters


def _member_cluster(name: str, target: Target, ca_bundle: str, limit: int) -> cluster.Cluster:
    """Its provider's cluster (TLS, limits), with its endpoint naming the member: the
    upstream filters read which member an attempt goes to from there."""
    result = provider_cluster(name, target.provider.endpoint, ca_bundle, limit)
    (host,) = result.load_assignment.endpoints[0].lb_endpoints
    if target.provider.http_host is not None:
        # The chain's routes take Host from the endpoint (auto_host_rewrite), per attempt:
        # a member's own http_host is its endpoint's hostname.
        assert host.endpoint is not None
        host.endpoint.hostname = target.provider.http_host
    host.metadata = core.Metadata(
        filter_metadata={METADATA_NAMESPACE: Struct.from_dict({"target": target.name})}
    )
    result.outlier_detection = OUTLIER_DETECTION
    return result


def _aggregate(
    chain: Chain, members: list[str], options: EnvoyOptions, limit: int
) -> cluster.Cluster:
    filters = [
        http_filter(
            "plano.host_target",
            header_mutation.HeaderMutation(
                mutations=header_mutation.Mutations(
                    request_mutations=[_set(HOST_TARGET_HEADER, _MEMBER)],
                    # Who answered, for x-plano-model (filters.our_headers).
                    response_mutations=[_set(SERVED_HEADER, _MEMBER)],
                )
            ),
        ),
        http_filter("plano.fallback_attempt", _attempt_processor(chain, options)),
        http_filter(
            "plano.host_target_out",
            header_mutation.HeaderMutation(
                mutations=header_mutation.Mutations(
                    request_mutations=[
                        mutation_rules.HeaderMutation(remove=HOST_TARGET_HEADER),
                        mutation_rules.HeaderMutation(remove=ATTEMPT_COUNT_HEADER),
                    ]
                )
            ),
        ),
        http_filter("envoy.filters.http.upstream_codec", upstream_codec.UpstreamCodec()),
    ]
    protocol = upstream_http.HttpProtocolOptions(
        explicit_http_config=upstream_http.HttpProtocolOptionsExplicitHttpConfig(
            http_protocol_options=core.Http1ProtocolOptions()
        ),
        http_filters=filters,
    )
    return cluster.Cluster(
        name=chain.id,
        connect_timeout=timedelta(seconds=5),
        lb_policy=cluster.ClusterLbPolicy.CLUSTER_PROVIDED,
        cluster_type=cluster.ClusterCustomClusterType(
            name="envoy.clusters.aggregate",
            typed_config=Any.pack(aggregate.ClusterConfig(clusters=members)),
        ),
        # Its own limits count the chain's retries too (Envoy's default of 3 let 3 of 12
        # concurrent requests fail over).
        circuit_breakers=circuit_breakers(limit),
        typed_extension_protocol_options={
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": Any.pack(protocol)
        },
    )


_MEMBER = f"%UPSTREAM_METADATA({METADATA_NAMESPACE}:target)%"


def _set(name: str, value: str) -> mutation_rules.HeaderMutation:
    return mutation_rules.HeaderMutation(append=header(name, value))


_HEADERS, _BODY = ext_proc.ProcessingModeHeaderSendMode, ext_proc.ProcessingModeBodySendMode


def _attempt_processor(chain: Chain, options: EnvoyOptions) -> matching.ExtensionWithMatcher:
    """The ext_proc stream that readies an attempt for its member, not made for the primary
    on the first attempt. Any later attempt runs it, the primary's too: an attempt starts
    from the headers the one before left (a fallback's key among them)."""
    service = grpc_service(options)
    service.initial_metadata = [core.HeaderValue(key=FALLBACK_METADATA, value=chain.id)]
    processor = ext_proc.ExternalProcessor(
        grpc_service=service,
        failure_mode_allow=False,  # never an attempt that is not readied for its member
        processing_mode=ext_proc.ProcessingMode(
            request_header_mode=_HEADERS.SEND,
            request_body_mode=_BODY.BUFFERED,
            response_header_mode=_HEADERS.SEND,
            response_body_mode=_BODY.STREAMED,
            request_trailer_mode=_HEADERS.SKIP,
            response_trailer_mode=_HEADERS.SKIP,
        ),
        # A member of the primary's API needs no response phases: the server turns them off.
        allow_mode_override=True,
        # It sets :path (and the Host stays the endpoint's, from auto_host_rewrite).
        mutation_rules=mutation_rules.HeaderMutationRules(allow_all_routing=True),
        message_timeout=timedelta(seconds=options.message_timeout_s),
        status_on_error=HttpStatus(code=STATUS_ON_ERROR),
    )
    # The composite filter creates the ext_proc filter only when its matcher says so: the
    # primary's first attempt (the path that does not fail) matches nothing, and pays
    # neither a stream nor the filter. (Wrapping the ext_proc filter to skip it instead
    # cost Envoy some 40 µs a request: the filter is made either way.)
    execute = xds_matcher.MatcherOnMatch(
        action=xds_core.TypedExtensionConfig(
            name="fallback_attempt",
            typed_config=Any.pack(
                composite.ExecuteFilterAction(
                    typed_config=core.TypedExtensionConfig(
                        name="envoy.filters.http.ext_proc", typed_config=Any.pack(processor)
                    )
                )
            ),
        )
    )
    # A nested matcher that matches nothing falls back on the outer one's on_no_match (which
    # makes the ext_proc filter): the primary's first attempt must match, and make a filter
    # that does nothing instead.
    nothing = xds_matcher.MatcherOnMatch(
        action=xds_core.TypedExtensionConfig(
            name="as_decided",
            typed_config=Any.pack(
                composite.ExecuteFilterAction(
                    typed_config=core.TypedExtensionConfig(
                        name="envoy.filters.http.header_mutation",
                        typed_config=Any.pack(header_mutation.HeaderMutation()),
                    )
                )
            ),
        )
    )
    later_attempts = xds_matcher.Matcher(
        matcher_tree=xds_matcher.MatcherMatcherTree(
            input=_header_input("attempt", ATTEMPT_COUNT_HEADER),
            exact_match_map=xds_matcher.MatcherMatcherTreeMatchMap(map={"1": nothing}),
        ),
        on_no_match=execute,
    )
    by_member = xds_matcher.Matcher(
        matcher_tree=xds_matcher.MatcherMatcherTree(
            input=_header_input("host_target", HOST_TARGET_HEADER),
            exact_match_map=xds_matcher.MatcherMatcherTreeMatchMap(
                map={chain.primary.name: xds_matcher.MatcherOnMatch(matcher=later_attempts)}
            ),
        ),
        on_no_match=execute,
    )
    return matching.ExtensionWithMatcher(
        xds_matcher=by_member,
        extension_config=core.TypedExtensionConfig(
            name="envoy.filters.http.composite", typed_config=Any.pack(composite.Composite())
        ),
    )


def _header_input(name: str, header_name: str) -> xds_core.TypedExtensionConfig:
    return xds_core.TypedExtensionConfig(
        name=name, typed_config=Any.pack(HttpRequestHeaderMatchInput(header_name=header_name))
    )


def chain_retry_policy(chain: Chain, timeout_s: float) -> route.RetryPolicy:
    """Each retry goes to the next member (the previous priorities are left out): on a
    connect failure, a reset, a 5xx or a 429, or no first byte within the timeout. A 429's
    retry-after is not waited out: the next attempt is another provider's."""
    return route.RetryPolicy(
        retry_on="connect-failure,refused-stream,reset,5xx,retriable-status-codes",
        retriable_status_codes=[429],
        num_retries=len(chain.members) - 1,
        per_try_idle_timeout=timedelta(seconds=timeout_s),
        retry_back_off=route.RetryPolicyRetryBackOff(
            base_interval=timedelta(milliseconds=10), max_interval=timedelta(milliseconds=50)
        ),
        retry_priority=route.RetryPolicyRetryPriority(
            name="envoy.retry_priorities.previous_priorities",
            typed_config=Any.pack(previous_priorities.PreviousPrioritiesConfig(update_frequency=1)),
        ),
    )
