"""Workflows the simulator's own quality suite (``tests/test_sim.py``) explores.

``good`` holds correct workflows that must pass every crash schedule; ``bad``
holds workflows that are wrong on purpose, each of which the simulator must
catch; ``fakes`` holds the in-memory outside world their activities talk to.
"""
