"""spark-submit entry point for one pipeline stage (what Airflow's SparkSubmitOperator runs):

    spark-submit batch/spark_entry.py STAGE --data DIR --artifacts ART --run-date YYYY-MM-DD

The master comes from spark-submit (Airflow's spark_default connection), not from config.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    os.environ.setdefault("RECSYS_SPARK_SUBMITTED", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from shared.parent_death import die_with_parent

    # The driver dies with the spark-submit JVM that started it: a killed task must not
    # leave a driver writing the stage's outputs beside its retry (shared/parent_death.py).
    die_with_parent()
    import logging

    from typer.main import get_command

    from batch.pipeline.cli import batch_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    get_command(batch_app).main(args=["stage", *sys.argv[1:]], prog_name="spark_entry")
