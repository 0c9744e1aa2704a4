"""geoop.data."""
