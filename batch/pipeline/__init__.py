"""The nightly pipeline: one module per stage, composed by stages.py."""
