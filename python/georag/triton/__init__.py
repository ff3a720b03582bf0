"""Triton model repositories: generate one for a store, an encoder and an LLM from packaged templates."""
