"""Gallery stores (embeddings + metadata, searchable), embedders (torch or ONNX) and search."""
# Store engines register themselves in vreid.gallery.base.STORES when imported (their heavy imports are lazy).
from vreid.gallery import store_faiss, store_milvus  # noqa: F401
