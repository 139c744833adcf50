"""The online service: ANN retrieval, int8 re-rank, fallbacks. No pyspark, no torch."""
