"""Scoring, experiments, figures and the `groundtruth` command line."""
