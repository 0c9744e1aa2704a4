"""geoop.train."""
