"""Scoring image sets: feature backbones, set loading, the metrics report (ScoreService and ``hipgen
report`` share it)."""
