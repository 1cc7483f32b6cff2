"""Evaluation: predictions in, results out. ``metrics`` never imports a model."""
