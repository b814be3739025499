"""Turning a trained model into lists: the Recommender, its options, explanations, the embedding map."""
