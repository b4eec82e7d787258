"""The pure core of durable: what a run is, decided without doing any I/O.

Commands (what a workflow yields), journal events (what happened), values and
the journal codec (how both become bytes), the replay machine (events in,
what to do next out), retry policy, durations, run ids and the errors they
raise. Nothing here imports trio, the operating system or a store: the
executor and the stores around it (``durable._executor``, ``durable._store*``)
carry out what the core decides, and the simulator drives the same core with
a simulated world. ``tests/test_layers.py`` holds that rule.
"""
