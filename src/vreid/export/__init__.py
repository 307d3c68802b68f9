"""ONNX export of a run's embedding model, with its preprocessing in the file's metadata and a parity check.

Torch-free to import: `vreid.export.to_onnx` (the exporter) imports torch; the metadata and preprocessing
modules that an ONNX embedder needs at inference do not.
"""
