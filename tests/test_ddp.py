"""DDP: two gloo CPU processes under torchrun end with identical weights and a loadable model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crossrec_core.storage import registry


@pytest.mark.slow
def test_two_gloo_ranks_identical_weights(tmp_path, workspace):
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{int(x)}", t, "view") for u in range(40) for t, x in enumerate(rng.choice(12, 5, replace=False))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"]).to_csv(tmp_path / "log.csv", index=False)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "CROSSREC_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd + ["--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000), "-m", "crossrec_core.training.ddp",
               "--interactions", str(tmp_path / "log.csv"), "--out", str(tmp_path / "model"), "--epochs", "2",
               "--device", "cpu", "--no-text", "--report-dir", str(tmp_path / "ranks")],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["world"] == 2
    assert reports[0]["digest"] == reports[1]["digest"]
    model = registry.load_model(tmp_path / "model")
    assert model.n_items == 12
    from crossrec_core.training.ddp import weights_digest

    assert weights_digest(model.net.state_dict()) == reports[0]["digest"]
