"""Quality measured against an external hold-out: `recsys evaluate-holdout` (docs/quality.md)."""
