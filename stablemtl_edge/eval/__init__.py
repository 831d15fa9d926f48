"""Evaluation (numpy): alignment, per-task metrics, delta_m, benchmark readers."""
