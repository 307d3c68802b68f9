"""The search service: an HTTP API over a gallery store and an embedder, and the web page it serves."""
