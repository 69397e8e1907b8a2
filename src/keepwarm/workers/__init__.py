"""Worker processes (the pool is built on the workers branch)."""
