"""Input data for the pipeline: importers and a synthetic generator that write the data contract.

See `batch.data.contract` for the files a data directory holds.
"""
