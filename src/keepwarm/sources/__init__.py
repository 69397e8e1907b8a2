"""Sources: where model files come from (local paths, HTTP archives, remote stores).

``keepwarm.sources.resolve.resolve_uri`` turns a URI into a local path; the cache and
downloads live in ``download``/``cache``/``archive``, fsspec stores in ``remote``.
"""
