"""geoop.models."""
