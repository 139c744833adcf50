"""The analysis half of A/B experiments: per-arm ratio metrics with the user as the unit,
lift and p-values by the delta method, the sample-ratio-mismatch check, the power
calculation and guardrails (stats.py), the report over the warehouse (report.py), and an
offline replay of the simulator's click model that proves them (replay.py, docs/experiments-analysis.md).
"""
