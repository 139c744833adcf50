"""The nightly batch side: Spark jobs, FAISS index build, evaluation, publishing."""
