"""The ext_proc data plane: what runs per Envoy message.

- ``server.py``: the gRPC shell, on either transport; a handler per stream, chosen by the
  stream's metadata (a decision for one client API, one response's translation, or one
  fallback attempt);
- ``h2grpc.py``: the default transport, gRPC on HTTP/2 for one method, every resource bounded;
- ``processor.py``: a request body -> the decision's answer (metadata, the body spliced or
  translated); pure;
- ``response_translation.py``: a translated route's response -> the client's; pure;
- ``fallback.py``: a fallback attempt readied for its chain member (path, key, body,
  translation both ways); pure;
- ``offload.py``: the helper processes that read big bodies off the event loop.
"""
