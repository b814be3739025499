"""Reading, validating and indexing interaction logs."""

from crossrec_core.data.dataset import DataReport, InteractionDataset, LeaveLastOut, Sequences, from_frames

__all__ = ["DataReport", "InteractionDataset", "LeaveLastOut", "Sequences", "from_frames"]
