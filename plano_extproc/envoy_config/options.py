"""What a rendered bootstrap can be told besides the config: where the ext_proc server and Envoy's
admin API are, the trust store, the message timeout, the readiness listener, the access log.
"""

from __future__ import annotations

from dataclasses import dataclass

# Envoy 1.40 accepts CertificateValidationContext.system_root_certs but does not act on it: a
# certificate from an unknown CA was accepted. It also refuses SAN matching without
# trusted_ca. So the system trust store is named by file; this is where Debian, Ubuntu,
# Alpine and Arch keep it (system_ca_bundle() finds it elsewhere).
DEFAULT_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


# Where Envoy's admin API listens unless told otherwise: a Unix socket that only Envoy's own
# user may open. Admin can raise the log level until Envoy logs provider keys, or stop Envoy;
# on 127.0.0.1 every process on the machine (every container of a Kubernetes pod) reaches it.
DEFAULT_ADMIN_SOCKET = "/tmp/plano-envoy-admin.sock"


ADMIN_SOCKET_MODE = 0o600

# Where Envoy writes the access log (access_log.py) unless told otherwise: beside its own
# logs, where a container's are collected.
DEFAULT_ACCESS_LOG = "/dev/stdout"


@dataclass(frozen=True)
class EnvoyOptions:
    extproc: tuple[tuple[str, int], ...] = (("127.0.0.1", 10000),)
    # Admin on this Unix socket (owner-only; None: DEFAULT_ADMIN_SOCKET), or on
    # 127.0.0.1:admin_port when that is set.
    admin_socket: str | None = None
    admin_port: int | None = None
    message_timeout_s: float = 5.0
    ca_bundle: str = DEFAULT_CA_BUNDLE  # trust store for https providers
    # A listener on ready_address:ready_port that answers GET /ready from the admin API's
    # /ready and nothing else (ready.py); None: no such listener.
    ready_port: int | None = None
    ready_address: str = "0.0.0.0"
    # Envoy's per-request stats for the metrics endpoint (metrics.py); off: none are kept.
    decision_stats: bool = False
    # With them, the token counts of providers' JSON answers (metrics.py): each answer read
    # and parsed by Envoy, which costs the hot path (bench/RESULTS.md, "Operating").
    token_stats: bool = False
    # The file Envoy writes one JSON line per request to (access_log.py); None: no access log.
    access_log: str | None = DEFAULT_ACCESS_LOG


DEFAULTS = EnvoyOptions()
