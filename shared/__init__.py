"""The contract shared by the nightly batch side and the online service.

Schemas, bundle layout, manifest, configuration, evaluation metrics and the CLI root.
Imports none of pyspark, flask, torch, faiss or onnxruntime.
"""

__version__ = "0.1.0"
