"""What lives on disk: the workspace, saved datasets, the model registry and its catalogue."""
