"""How the gateway runs: `serve` in one process, the supervisor of `--workers N`, and the demo."""
