"""plano-extproc: an LLM router that runs as an Envoy ext_proc sidecar."""

from .config import Config, ConfigError, load_config, parse_config
from .resolve import Decision, resolve

__all__ = ["Config", "ConfigError", "Decision", "load_config", "parse_config", "resolve"]
__version__ = "0.1.0"
