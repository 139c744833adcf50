"""Spark building blocks the stages compose: input reading, validation, id maps, splits,
ALS, candidate generation (with the numpy task code it runs in mapInPandas), fusion and
evaluation. No module here knows the run's directory layout: stages pass paths in."""
