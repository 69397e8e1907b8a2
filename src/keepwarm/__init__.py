"""keepwarm: load a model once, keep it warm, serve it from anywhere."""
