"""One translated response: the ext_proc messages of the second filter in, answers out.

A provider route whose provider speaks the other API turns on a second ext_proc filter for
the response (envoy_config/routes.py): it sends the response headers, then the body, chunk by chunk
as it arrives, on a gRPC stream whose metadata names the translation pair. No I/O here: the
server feeds each message to ``TranslatedResponse.handle`` and sends back what it returns.

- A 2xx event stream is translated as it flows: each upstream chunk (split anywhere) becomes
  the client's events, and the end of the upstream stream closes the client's stream properly.
- Anything else (a JSON response, an error of any status) is read whole: each chunk is
  answered with nothing until the last, which carries the translated body.

Envoy sends the first body chunk without waiting for the headers answer
(``send_body_without_waiting_for_header_response``): the two reach the server together, and
the first token costs the client one round trip to the server, not two. So the headers are
answered from the headers alone: the status is the client's for the upstream's (an
upstream's 529 is an OpenAI client's 503; an OpenAI 503 an Anthropic client's 529), and a 2xx
body that turns out not to be a response (a rare upstream bug) becomes an error body under
the 2xx already sent. Either way the translated body has another length: content-length is
removed and the client gets it chunked. A reply Envoy gave itself (a provider that could not
be reached) passes through this filter too: its local-reply mapper marked it
(``wire.LOCAL_REPLY_HEADER``), and it is left as it is, in the client's shape already.
"""

from __future__ import annotations

from .._proto import ext_proc_pb2 as pb
from ..translate import StreamTranslator, Translator
from ..wire import INCLUDE_USAGE_KEY, LOCAL_REPLY_HEADER, RESPONSE_NAMESPACE

_OVERWRITE = pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# The most of a whole (not streamed) response this holds to translate; past it the client
# gets an error. A chat response is kilobytes; this only stops a runaway upstream.
MAX_WHOLE_RESPONSE_BYTES = 64 * 1024 * 1024


def _header(key: str, value: str) -> pb.HeaderValueOption:
    # raw_value, not value: Envoy 1.40 applied a `value` string as an empty header value.
    return pb.HeaderValueOption(
        header=pb.HeaderValue(key=key, raw_value=value.encode()), append_action=_OVERWRITE
    )


class TranslatedResponse:
    """The state of one response's translation; a new one per gRPC stream."""

    def __init__(self, pair: Translator, include_usage: bool | None = None) -> None:
        self._pair = pair
        # What the client asked of a stream's usage. None: read from the metadata Envoy
        # forwards with the response (the decision's RESPONSE_NAMESPACE, on a translated
        # provider route); a fallback attempt (fallback.py) gets no such metadata and says
        # it here, from the request body it read.
        self._include_usage = include_usage
        self._status = 200
        self._stream: StreamTranslator | None = None
        self._whole = bytearray()  # a response read whole, so far
        self._over_limit = False
        self._untouched = False  # Envoy's own reply: in the client's shape already

    def handle(self, request: pb.ProcessingRequest) -> tuple[pb.ProcessingResponse, bool]:
        """The answer to one message, and whether it is the last this response needs."""
        kind = request.WhichOneof("request")
        if kind == "response_headers":
            return self._headers(request), False
        if kind == "response_body":
            body = request.response_body
            if self._untouched:
                return _UNCHANGED_BODY, body.end_of_stream
            if self._stream is not None:
                out = self._stream.feed(body.body)
                if body.end_of_stream:
                    out += self._stream.finish()
                return _body(out), body.end_of_stream
            if not self._over_limit:
                if len(self._whole) + len(body.body) > MAX_WHOLE_RESPONSE_BYTES:
                    self._whole = bytearray(b"not read: over the gateway's limit")
                    self._status = 502
                    self._over_limit = True  # and the rest is not read either
                else:
                    self._whole += body.body
            if not body.end_of_stream:
                return _body(b""), False
            _, translated = self._pair.response_bytes(self._status, bytes(self._whole))
            return _body(translated), True
        # Trailers (asked for by nobody) or a request phase: let them through.
        empty = pb.CommonResponse()
        if kind == "response_trailers":
            return pb.ProcessingResponse(response_trailers=pb.TrailersResponse()), True
        return pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=empty)), False

    def _headers(self, request: pb.ProcessingRequest) -> pb.ProcessingResponse:
        content_type = ""
        for header in request.response_headers.headers.headers:
            value = header.raw_value.decode("latin-1") if header.raw_value else header.value
            if header.key == ":status":
                self._status = int(value) if value.isascii() and value.isdigit() else 502
            elif header.key == "content-type":
                content_type = value.lower()
            elif header.key == LOCAL_REPLY_HEADER:
                self._untouched = True
        if self._untouched:
            return _UNCHANGED_HEADERS
        mutation = pb.HeaderMutation(remove_headers=["content-length"])
        if 200 <= self._status < 300 and content_type.startswith("text/event-stream"):
            usage = self._include_usage
            if usage is None:
                fields = request.metadata_context.filter_metadata.get(RESPONSE_NAMESPACE)
                usage = fields is not None and fields.fields[INCLUDE_USAGE_KEY].bool_value
            self._stream = self._pair.stream({"stream_options": {"include_usage": usage}})
        else:
            status = self._status
            if not 200 <= status < 300:
                status, _ = self._pair.error(status, b"")
            mutation.set_headers.extend(
                [_header(":status", str(status)), _header("content-type", "application/json")]
            )
        return pb.ProcessingResponse(
            response_headers=pb.HeadersResponse(
                response=pb.CommonResponse(header_mutation=mutation)
            )
        )


_UNCHANGED_HEADERS = pb.ProcessingResponse(
    response_headers=pb.HeadersResponse(response=pb.CommonResponse())
)
_UNCHANGED_BODY = pb.ProcessingResponse(response_body=pb.BodyResponse(response=pb.CommonResponse()))


def _body(data: bytes) -> pb.ProcessingResponse:
    # An upstream chunk with nothing to show yet (half an event) is cleared, not passed on.
    mutation = pb.BodyMutation(body=data) if data else pb.BodyMutation(clear_body=True)
    return pb.ProcessingResponse(
        response_body=pb.BodyResponse(response=pb.CommonResponse(body_mutation=mutation))
    )
