"""The traffic simulator: plays synthetic users against a running service to prove the loop.

Users are the data generator's own (batch/data/generate.py), with the hidden genre tastes
their history was drawn from, so what a user would click is known. Each simulated day a
sample of users asks the service for a row, decides from its tastes what to click, play,
finish or dislike (batch/simulate/behaviour.py), and the simulator posts those events to
`POST /v1/events` like a product service would. Between days the nightly pipeline runs over
the base data plus the event log, so tomorrow's bundle learns from today's plays. The
report reads the outcomes back from the warehouse's own canned analyses (docs/simulator.md).
"""
