"""A run's stages, each a function (or a class with one job) over explicit inputs.

Data flows one way: ``opening`` (each target's lease, mode, state) → ``reading`` (the
source once, fingerprinted by ``fingerprinting``) → ``planning`` (each target's records
mapped and diffed a chunk at a time) → ``deciding`` (what needs the whole read: deletes,
duplicates, unpushable products, guards) → ``sending`` → ``finishing`` (one report, the
run's record and its log line). ``syncd.reconcile`` wires them into a run. (Named
``stages``, not ``run``: ``syncd.runs`` already holds a run's options and reports.)
"""
