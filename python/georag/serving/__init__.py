"""Serving the pipeline: the async driver, its steps (in-process or Triton BLS), limits, HTTP front."""
