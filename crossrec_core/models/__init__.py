"""The neural recommender: text encoder, item / user encoders, fusion scorer and the trained model."""
