"""The HTTP filters: our header rules, the decision's ext_proc filter, and the ext_proc filter that
translates responses on translated routes only.
"""

from __future__ import annotations

from datetime import timedelta

from envoy_data_plane.envoy.config.common.mutation_rules import v3 as mutation_rules
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.extensions.filters.http.ext_proc import v3 as ext_proc
from envoy_data_plane.envoy.extensions.filters.http.header_mutation import v3 as header_mutation
from envoy_data_plane.envoy.type.matcher.v3 import (
    StringMatcher,
)
from envoy_data_plane.envoy.type.v3 import HttpStatus
from envoy_data_plane.google.protobuf import Any

from ..wire import (
    ATTEMPTS_HEADER,
    DECISION_METADATA,
    METADATA_NAMESPACE,
    MODEL_HEADER,
    OUR_HEADER_PREFIX,
    RESPONSE_NAMESPACE,
    SERVED_HEADER,
)
from .clusters import EXTPROC_CLUSTER
from .common import header, metadata_value
from .options import EnvoyOptions

# The second ext_proc filter: it reads responses on the routes whose provider speaks the other
# API, and nowhere else (envoy/README.md: why a second filter).
RESPONSE_FILTER = "plano.translate_responses"
# The route response header that counts a chain's attempts (fallback.py sets it), and that
# our_headers turns into x-plano-attempts.
ATTEMPTS_INTERNAL = "plano-attempts"
# The filter that keeps x-plano-* headers ours (our_headers).
HEADER_MUTATION = "envoy.filters.http.header_mutation"
# A header_mutation filter that does nothing of its own: a provider route's per-route config
# sets its query (Azure OpenAI's api-version). It runs after the decision, on the provider
# route; the first filter runs on the entry route, whose per-route configs it would read.
PROVIDER_QUERY = "plano.provider_query"


# Every ext_proc failure but a timeout gets this status: our server's ImmediateResponses use
# 400/401/404/405/500 and Envoy's upstream failures 503/504, so 502 is the routing service's.
STATUS_ON_ERROR = 502


def our_headers(fallback: bool = False) -> header_mutation.HeaderMutation:
    """No ``x-plano-*`` header passes but the decision, either way: a client's could pose as
    the decision (or reach the provider), a provider's could pose as ours. On the response
    the decision headers are then set from the server's metadata; a key that is absent (no
    route, or a reply the gateway gave itself) adds no header."""
    ours = mutation_rules.HeaderMutation(
        remove_on_match=mutation_rules.HeaderMutationRemoveOnMatch(
            key_matcher=StringMatcher(prefix=OUR_HEADER_PREFIX)
        )
    )
    decision = [
        mutation_rules.HeaderMutation(append=header(name, metadata_value(key)))
        for name, key in DECISION_METADATA.items()
    ]
    if fallback:
        # A chain's response names the member that answered (set by its upstream filters)
        # and its route the attempts: over the decision's model, then the internal headers
        # go. An empty value (no chain) adds nothing, and leaves the decision's.
        decision += [
            mutation_rules.HeaderMutation(append=header(MODEL_HEADER, f"%RESP({SERVED_HEADER})%")),
            mutation_rules.HeaderMutation(
                append=header(ATTEMPTS_HEADER, f"%RESP({ATTEMPTS_INTERNAL})%")
            ),
            mutation_rules.HeaderMutation(remove=SERVED_HEADER),
            mutation_rules.HeaderMutation(remove=ATTEMPTS_INTERNAL),
        ]
    return header_mutation.HeaderMutation(
        mutations=header_mutation.Mutations(
            request_mutations=[ours], response_mutations=[ours, *decision]
        )
    )


_HEADERS, _BODY = ext_proc.ProcessingModeHeaderSendMode, ext_proc.ProcessingModeBodySendMode


def _modes(
    request_body: ext_proc.ProcessingModeBodySendMode = _BODY.NONE,
    response_headers: ext_proc.ProcessingModeHeaderSendMode = _HEADERS.SKIP,
    response_body: ext_proc.ProcessingModeBodySendMode = _BODY.NONE,
) -> ext_proc.ProcessingMode:
    """The phases an ext_proc filter sends; the request headers and trailers never."""
    return ext_proc.ProcessingMode(
        request_header_mode=_HEADERS.SKIP,
        response_header_mode=response_headers,
        request_body_mode=request_body,
        response_body_mode=response_body,
        request_trailer_mode=_HEADERS.SKIP,
        response_trailer_mode=_HEADERS.SKIP,
    )


def grpc_service(options: EnvoyOptions) -> core.GrpcService:
    # No grpc_service.timeout: Envoy does not apply it to the ext_proc stream (a 2 s
    # answer passed a 1 s one); message_timeout bounds each answer.
    return core.GrpcService(
        envoy_grpc=core.GrpcServiceEnvoyGrpc(cluster_name=EXTPROC_CLUSTER),
        # A dead worker refuses the connection before it got any message: try the next
        # one (round robin) at once. With one of two workers down, 20 of 20 requests
        # passed; without this, every other one failed. The default back-off is 1 s.
        retry_policy=core.RetryPolicy(
            retry_on="connect-failure,refused-stream,reset-before-request",
            num_retries=max(2, len(options.extproc)),
            retry_back_off=core.BackoffStrategy(
                base_interval=timedelta(milliseconds=5), max_interval=timedelta(milliseconds=50)
            ),
        ),
    )


def decision_filter(options: EnvoyOptions) -> ext_proc.ExternalProcessor:
    return ext_proc.ExternalProcessor(
        grpc_service=grpc_service(options),
        failure_mode_allow=False,  # fail closed: nothing leaves unrouted or with client auth
        # One message each way per request: the buffered body in, the decision out. The
        # route table checks method and path, so the headers phase has nothing to do; with it
        # skipped, Envoy applies no header mutation, and the decision travels as dynamic
        # metadata that the provider routes match and turn into headers (bench/RESULTS.md
        # has the cost of both designs).
        processing_mode=_modes(request_body=_BODY.BUFFERED),
        metadata_options=ext_proc.MetadataOptions(
            receiving_namespaces=ext_proc.MetadataOptionsMetadataNamespaces(
                untyped=[METADATA_NAMESPACE, RESPONSE_NAMESPACE]
            )
        ),
        message_timeout=timedelta(seconds=options.message_timeout_s),
        status_on_error=HttpStatus(code=STATUS_ON_ERROR),
    )


def response_filter(options: EnvoyOptions) -> ext_proc.ExternalProcessor:
    """The filter that reads translated responses: off unless a route turns it on."""
    return ext_proc.ExternalProcessor(
        grpc_service=grpc_service(options),
        failure_mode_allow=False,
        processing_mode=_modes(),
        # What the response's translator needs of the request, from the decision.
        metadata_options=ext_proc.MetadataOptions(
            forwarding_namespaces=ext_proc.MetadataOptionsMetadataNamespaces(
                untyped=[RESPONSE_NAMESPACE]
            )
        ),
        # The first chunk goes with the headers: one round trip to the first token, not two.
        send_body_without_waiting_for_header_response=True,
        message_timeout=timedelta(seconds=options.message_timeout_s),
        status_on_error=HttpStatus(code=STATUS_ON_ERROR),
    )


# The response filter's phases on a translated route: the headers, then the body as it comes.
TRANSLATING = _modes(response_headers=_HEADERS.SEND, response_body=_BODY.STREAMED)


NO_EXT_PROC = {"envoy.filters.http.ext_proc": Any.pack(ext_proc.ExtProcPerRoute(disabled=True))}
