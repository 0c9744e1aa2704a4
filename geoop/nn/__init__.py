"""geoop.nn."""
