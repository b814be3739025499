"""The CrossrecError family: every failure a user can act on is one of these.

Messages say what is wrong and what to do, in words a merchandiser understands
(which file, which column, how many rows, an example value). Anything that is
not a CrossrecError is a bug and should look like one.
"""


class CrossrecError(Exception):
    """Base of every error crossrec raises on purpose."""


class DataError(CrossrecError):
    """A log or items table cannot be read or does not make sense."""


class SchemaError(DataError):
    """A required column is missing or a column mapping is wrong."""


class ConfigError(CrossrecError):
    """A configuration value is out of range or inconsistent."""


class ModelError(CrossrecError):
    """A saved model folder is missing, damaged, unsafe or does not fit the data."""


class LeakError(ModelError):
    """A model was trained on some of the events an evaluation holds out as targets (evaluate.seen_targets)."""


class StorageError(CrossrecError):
    """The workspace could not be written (the disk is full); nothing half-written was left behind."""


class NotTrainedError(CrossrecError):
    """A model was asked to predict before it was trained or loaded."""


class UnknownItemError(CrossrecError):
    """An item or user id is not in the model's vocabulary."""
