"""Multi-objective search quality: tuneyard's MO-ASHA against Optuna's NSGA-II and MOTPE.

Run it with ``python bench/multi_objective.py`` (see the section in ``bench/README.md``).
"""
