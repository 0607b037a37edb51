"""The pure scheduler core: search spaces, samplers, multi-fidelity schedulers."""
