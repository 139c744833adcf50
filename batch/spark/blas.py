"""Which BLAS Spark MLlib's ALS runs on, for the logs and the manifest.

Spark 4 calls BLAS through dev.ludovic.netlib: `JNIBLAS` when a native libblas.so.3 loads
(Debian's libopenblas0-pthread provides one; `make setup` installs it where it can), else
`VectorBLAS`/`JavaBLAS`, pure Java, about 2x slower on rank-64 ALS. The choice is made once per
JVM, silently: without this record a machine that lost its native library would just get
slower nights.
"""

from __future__ import annotations

import logging
import os

from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

NATIVE = "JNIBLAS"
# One BLAS thread per Spark task: tasks already use every core, and OpenBLAS's own threads
# on top of them oversubscribe the machine (Spark's MLlib guide says the same).
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def single_threaded_env() -> dict[str, str]:
    """The environment a driver or executor JVM needs for one BLAS thread per task."""
    return dict.fromkeys(THREAD_VARS, "1")


def set_single_threaded() -> None:
    """For the driver JVM (and local-mode executors, which are the driver): before it starts."""
    for name, value in single_threaded_env().items():
        os.environ.setdefault(name, value)


def loaded_blas(spark: SparkSession) -> dict[str, object]:
    """{"blas": class name, "lapack": class name, "native": bool} of the driver's JVM (the
    executors' in local mode; on a cluster each executor chooses for itself, from the same
    libraries when the workers are provisioned alike)."""
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    try:
        blas = str(jvm.dev.ludovic.netlib.blas.BLAS.getInstance().getClass().getSimpleName())
        lapack = str(jvm.dev.ludovic.netlib.lapack.LAPACK.getInstance().getClass().getSimpleName())
    except Exception as exc:  # an unexpected Spark build: report, never fail the night
        log.warning("could not ask the JVM which BLAS it loaded: %s", exc)
        return {"blas": "unknown", "lapack": "unknown", "native": False}
    native = blas == NATIVE
    if native:
        log.info("ALS BLAS: %s (native), LAPACK: %s", blas, lapack)
    else:
        log.warning("ALS BLAS: %s (pure Java, ~2x slower ALS): install a native libblas.so.3 "
                    "(Debian: apt-get install libopenblas0-pthread; `make setup` does it as root)", blas)  # fmt: skip
    return {"blas": blas, "lapack": lapack, "native": native}
