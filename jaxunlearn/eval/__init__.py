"""Evaluation: metrics, judge client, reports, plots and protocols."""
