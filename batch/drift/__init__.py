"""Input drift checks of the nightly run (docs/monitoring.md).

`stats`: the distances (PSI, Jensen-Shannon) on plain numpy counts; `profile`: what one run's
input looks like (volumes per day and type, item mix, user activity, ids seen), computed with
DuckDB over Parquet files or Arrow tables, so the stage and the false-alarm bench share it
without Spark; `checks`: the checks, their thresholds and the verdict; `store`: the profiles
of published runs (the references of later runs) and the history the warehouse reads.
"""
