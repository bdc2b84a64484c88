"""Metric providers, one module per provider; each implements `plan.analysis.MetricProvider`.

Providers do I/O and report what they got (a value, no data, or an error with detail); they never
judge. Thresholds, limits and verdicts live in `plan/analysis.py`.
"""
