"""Reading, validating and indexing interaction logs."""

from crossrec_core.data.dataset import DataReport, InteractionDataset, LeaveLastOut, Sequences, from_frames
from crossrec_core.data.demo_store import DemoStore, build_demo_dataset, make_demo_store
from crossrec_core.data.load import load_log
from crossrec_core.data.profile import DatasetProfile, profile_dataset
from crossrec_core.data.readers import read_table
from crossrec_core.data.schema import suggest_mapping

__all__ = [
    "DataReport",
    "DatasetProfile",
    "DemoStore",
    "InteractionDataset",
    "LeaveLastOut",
    "Sequences",
    "build_demo_dataset",
    "from_frames",
    "load_log",
    "make_demo_store",
    "profile_dataset",
    "read_table",
    "suggest_mapping",
]
