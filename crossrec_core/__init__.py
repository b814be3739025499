"""crossrec_core: data, models and evaluation for cross-category recommendation.

This package never imports streamlit; the app, the CLI, tests and notebooks all use it the same way.
"""

from crossrec_core.errors import (
    ConfigError,
    CrossrecError,
    DataError,
    ModelError,
    NotTrainedError,
    SchemaError,
    UnknownItemError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CrossrecError",
    "DataError",
    "ModelError",
    "NotTrainedError",
    "SchemaError",
    "UnknownItemError",
    "__version__",
]
