"""Experiments above locate and evaluate: sweeps of the whole pipeline over a grid of settings."""
