"""Canary rollouts, the batch half: the guardrail check over the warehouse (check.py, the\ndecision in guardrails.py) and the promotion (docs/experiments.md, "Canary rollouts")."""
