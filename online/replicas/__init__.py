"""Replicas of the service behind HAProxy: `recsys replicas up|roll|status|down`
(docs/replicas.md). Imports neither Flask nor the scoring stack: it starts processes."""
