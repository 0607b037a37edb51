"""Search-quality benchmark: tuneyard's samplers and schedulers against Optuna's.

Run it with ``python bench/quality.py`` (see ``bench/quality/README.md``).
"""
