"""geoop.viz."""
