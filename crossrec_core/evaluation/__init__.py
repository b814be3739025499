"""Measuring lists: ranking metrics, baselines, the evaluator, thresholds, affinity."""
