"""Gallery stores (embeddings + metadata, searchable), embedders (torch or ONNX) and search."""
