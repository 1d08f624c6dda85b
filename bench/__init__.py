"""The gateway's benchmark: `uv run python -m bench` (see `bench.__main__`).

The simulator, the gateway and the load generator run as separate processes on loopback;
every gateway figure is set beside the limit — a direct client making the fewest upstream
calls — measured in the same run.
"""
