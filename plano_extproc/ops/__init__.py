"""Operating a running gateway: its metrics (metrics.py, endpoint.py) and what else an
operator sees or changes without a restart (the other modules here)."""
