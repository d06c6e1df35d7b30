"""Figures drawn from saved results: recovery (cosine heatmaps, scores against L0), belief geometry and
board games. No module here selects a matplotlib backend."""
