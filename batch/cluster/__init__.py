"""A Spark standalone cluster on this machine, from the installed pyspark (`recsys cluster`)."""
