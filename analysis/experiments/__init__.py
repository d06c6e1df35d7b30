"""Experiments: recovery on activation sources, belief geometry, board games, and the demo. Each writes
a run folder (:mod:`.runs`), trains or loads its model, collects activations at hooks
(:mod:`.activations`), trains SAEs on them and saves what the figures draw from."""
