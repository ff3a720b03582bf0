"""Strategies: pure routes from retrieved evidence to a Prediction (rag, knn, knn-medoid, vpr-guided)."""
