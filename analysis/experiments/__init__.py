"""Experiments: recovery on activation sources, belief geometry, board games, and the demo. Each writes
a run folder (:mod:`.runs`), trains its model or loads it from there (:mod:`.skeleton`), collects
activations at hooks (:mod:`.activations`), trains SAEs on cached activations (:mod:`.skeleton`), and
saves what the figures draw from."""
