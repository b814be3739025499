"""AppTest tests of the Evaluation page: calibration, the threshold curve and saving it, comparing two models.

The workspace holds a small demo store and 'demo-store-early' (the same shoppers without their last two
events), a tiny model trained on each. 'demo-model' was trained on events that are 'demo-store-early''s
held-out targets, so evaluating it there is the leak the guard refuses.
"""

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig

APP = str(Path(__file__).resolve().parent.parent / "app.py")
EVAL = "pages/evaluation.py"
EARLY, EARLY_MODEL = "demo-store-early", "early-model"


def _tiny_config() -> ModelConfig:
    return ModelConfig(
        item=ItemEncoderConfig(dim=16, use_text=False),
        user=UserEncoderConfig(kind="gru", dim=16, max_len=20),
        train=TrainConfig(epochs=1, fusion_epochs=1, device="cpu", seed=0),
    )


def _without_last_events(ds, n_drop: int, name: str):
    """Return ``ds`` with each shopper's last ``n_drop`` events cut (an older export of the same log)."""
    from crossrec_core.data.load import load_log

    lens = np.diff(ds.seqs.offsets)
    pos = np.arange(len(ds.seqs.items)) - np.repeat(ds.seqs.offsets[:-1], lens)
    keep = pos < np.repeat(lens, lens) - n_drop
    users = np.repeat(ds.user_ids, lens)[keep]
    inter = pd.DataFrame({"user_id": users, "item_id": ds.item_ids[ds.seqs.items[keep]],
                          "timestamp": ds.seqs.times[keep], "event": ds.event_names[ds.seqs.events[keep]]})
    catalogue = pd.DataFrame({"item_id": ds.item_ids, "category": ds.category_names[ds.item_category],
                              "title": ds.item_titles})
    return load_log(inter, catalogue, name=name)


@pytest.fixture(scope="module")
def eval_home(tmp_path_factory):
    """Return a workspace: 'demo-store' + 'demo-model', 'demo-store-early' + 'early-model' (built once)."""
    from crossrec_core.training.bootstrap import DEMO_DATASET, DEMO_MODEL
    from crossrec_core.data.demo_store import make_demo_store
    from crossrec_core.data.load import load_log
    from crossrec_core.storage.datasets import save_dataset
    from crossrec_core.storage.registry import save_model
    from crossrec_core.training.loop import train_model

    root = tmp_path_factory.mktemp("evalpage")
    store = make_demo_store(seed=0, n_users=400, n_items=240)
    ds = load_log(store.interactions, store.items, name=DEMO_DATASET)
    save_dataset(ds, DEMO_DATASET, root=root, extras={"journeys": store.journeys})
    save_model(train_model(ds, _tiny_config(), name=DEMO_MODEL), root / "models" / DEMO_MODEL)
    early = _without_last_events(ds, 2, EARLY)
    save_dataset(early, EARLY, root=root)
    save_model(train_model(early, _tiny_config(), name=EARLY_MODEL), root / "models" / EARLY_MODEL)
    return root


@pytest.fixture
def home(eval_home, monkeypatch):
    monkeypatch.setenv("CROSSREC_HOME", str(eval_home))
    return eval_home


@pytest.fixture
def scratch(eval_home, tmp_path, monkeypatch):
    """A copy of the workspace, for tests that write into a model folder."""
    root = tmp_path / "ws"
    shutil.copytree(eval_home, root, ignore=shutil.ignore_patterns("jobs"))
    monkeypatch.setenv("CROSSREC_HOME", str(root))
    return root


def evaluated(**state) -> AppTest:
    """Return the Evaluation page after pressing Evaluate (demo-store and demo-model unless told)."""
    state = {"dataset_name": "demo-store", "model_name": "demo-model", **state}
    at = AppTest.from_file(APP, default_timeout=300)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    at.switch_page(EVAL)
    at.run()
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception
    return at


def spec(at: AppTest, key: str) -> dict:
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith("-" + key)]
    assert charts, f"no plotly chart with key {key}"
    return json.loads(charts[0].proto.spec)


def values(v) -> np.ndarray:
    """Return a plotly JSON array (a list, or plotly's base64 typed array) as numpy."""
    if isinstance(v, dict) and "bdata" in v:
        out = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return out.reshape([int(n) for n in str(v["shape"]).split(",")]) if "shape" in v else out
    return np.asarray(v, dtype=float)


def texts(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown] + [c.value for c in at.caption]


def number_after(text: str, words: str) -> float:
    found = re.search(re.escape(words) + r" (-?\d+\.\d+)", text)
    assert found, f"no '{words} <number>' in: {text}"
    return float(found.group(1))


def test_the_reliability_diagram_and_its_sentence_agree(home):
    at = evaluated()
    sentence = next(t for t in texts(at) if "expected calibration error" in t)
    assert "mean probability" in sentence and "hit rate of" in sentence and "Brier score" in sentence
    assert any("test targets (each shopper's last event)" in t and "10 products shown" in t for t in texts(at))
    # the line above the tables: which shoppers, targets and split
    assert any(t.startswith("Test targets: each shopper's last event") and "before each shopper's last two" in t
               and "everything before each target" in t for t in texts(at))
    observed = next(t for t in spec(at, "eval_reliability")["data"] if t["name"] == "observed")
    n = values(observed["customdata"]).astype(float)[:, 2]
    x, y = values(observed["x"]).astype(float), values(observed["y"]).astype(float)
    assert n.sum() > 0 and len(x) >= 1
    # the sentence's numbers are the diagram's: ECE = row-weighted |mean probability - hit rate| over bins
    assert number_after(sentence, "expected calibration error") == pytest.approx(float((n * abs(x - y)).sum() / n.sum()), abs=6e-4)
    assert number_after(sentence, "mean probability is") == pytest.approx(float((n * x).sum() / n.sum()), abs=6e-4)
    assert number_after(sentence, "hit rate of") == pytest.approx(float((n * y).sum() / n.sum()), abs=6e-4)


def test_the_threshold_curve_marks_the_validated_and_the_current_threshold(home):
    from crossrec_core.storage.registry import load_model
    from crossrec_core.evaluation.thresholds import threshold_curve
    from crossrec_core.storage.datasets import load_dataset

    at = evaluated(threshold=0.3)
    curve = threshold_curve(load_model(home / "models" / "demo-model"), load_dataset("demo-store"))
    figure = spec(at, "eval_threshold_curve")
    marks = sorted(s["x0"] for s in figure["layout"]["shapes"])
    assert marks == sorted([0.3, curve.best_threshold])
    names = {t["name"] for t in figure["data"]}
    assert {"precision per shown product", "precision per shopper", "recall", "F1", "catalogue coverage",
            "products shown per shopper (right)"} <= names
    caption = next(c.value for c in at.caption if c.value.startswith("The curve is on the test targets"))
    assert "chosen on the validation targets" in caption
    assert any(c.value == "No threshold saved with demo\\-model yet." for c in at.caption)
    at.button(key="eval_use_best").click().run()
    assert not at.exception, at.exception
    assert at.session_state["threshold"] == pytest.approx(curve.best_threshold)
    assert at.slider(key="_eval_threshold_w").value == pytest.approx(curve.best_threshold)


def test_the_table_and_the_threshold_curve_count_the_same_shoppers(home, monkeypatch):
    """Both take the same seeded sample: the page once said 3,000 shoppers above the table and 4,914 under
    the curve for one test split."""
    import pages.evaluation_cache as cache

    monkeypatch.setattr(cache, "EVAL_MAX_USERS", 150)  # fewer than the store's 400 shoppers: the cap binds
    at = evaluated()
    assert any(c.value == "All shoppers: 150 shoppers" for c in at.caption), [c.value for c in at.caption]
    curve = next(c.value for c in at.caption if c.value.startswith("The curve is on the test targets"))
    assert "of 150 shoppers" in curve
    assert any("for up to 150 sampled shoppers" in c.value for c in at.caption)


def test_saving_the_threshold_writes_it_with_the_model_and_the_page_reads_it_back(scratch):
    from crossrec_core.storage.registry import load_model

    at = evaluated(threshold=0.37)
    at.button(key="eval_save_threshold").click().run()
    assert not at.exception, at.exception
    folder = scratch / "models" / "demo-model"
    assert json.loads((folder / "threshold.json").read_text()) == {"threshold": 0.37}
    assert load_model(folder).threshold == 0.37
    assert any("Saved threshold 0.37" in s.value for s in at.success)
    # the cached model was reloaded: the page shows what the folder now holds
    assert any(c.value == "Saved with demo\\-model: threshold 0.37." for c in at.caption)
    at.run()
    assert any(c.value == "Saved with demo\\-model: threshold 0.37." for c in at.caption)
    assert not at.success  # the notice is shown once


def test_two_models_are_compared_in_one_table_with_intervals_and_a_verdict(home):
    at = evaluated()
    assert at.selectbox(key="eval_cmp_a").value == "demo-model"
    at.selectbox(key="eval_cmp_b").set_value(EARLY_MODEL).run()
    assert not any(d.value.columns.tolist()[-1:] == ["verdict"] for d in at.dataframe)  # waits for the button
    at.button(key="eval_cmp_run").click().run()
    assert not at.exception, at.exception
    frame = next(d.value for d in at.dataframe if "verdict" in d.value.columns)
    assert {"demo-model", EARLY_MODEL, "difference", "95% interval"} <= set(frame.columns)
    assert set(frame["metric"]) == {"NDCG@10", "HR@10"}
    assert frame["shoppers"].iloc[0] == "All shoppers" and len(frame) >= 4
    assert set(frame["verdict"]) <= {"a real difference", "within noise"}
    row = frame.iloc[0]
    assert row["difference"] == pytest.approx(row["demo-model"] - row[EARLY_MODEL], abs=1e-9)
    low, high = (float(v) for v in row["95% interval"].split(" to "))
    assert low <= row["difference"] <= high
    assert (row["verdict"] == "a real difference") == (low > 0 or high < 0)
    left, right = spec(at, "eval_cmp_rel_0"), spec(at, "eval_cmp_rel_1")
    assert left["data"] and right["data"]
    assert left["layout"]["yaxis"]["range"] == right["layout"]["yaxis"]["range"]  # one scale for both


def test_comparing_with_a_model_trained_on_the_held_out_targets_warns_instead_of_failing(home):
    at = evaluated(dataset_name=EARLY, model_name=EARLY_MODEL)
    at.selectbox(key="eval_cmp_b").set_value("demo-model").run()
    at.button(key="eval_cmp_run").click().run()
    assert not at.exception, at.exception
    assert not at.error
    warning = next(w.value for w in at.warning if "was trained on" in w.value)
    assert "demo-model" in warning and "held out as test targets" in warning
    assert not any("verdict" in d.value.columns for d in at.dataframe)


def test_a_saved_threshold_is_the_default_here_as_on_recommendations(scratch):
    from crossrec_core.storage.registry import save_threshold

    save_threshold(scratch / "models" / "demo-model", 0.045)
    at = evaluated(threshold=0.3)  # the session's value from before: the model's saved threshold wins once
    assert at.session_state["threshold"] == pytest.approx(0.045)
    assert at.slider(key="_eval_threshold_w").value == pytest.approx(0.045)
    assert any(c.value == "Saved with demo\\-model: threshold 0.045." for c in at.caption)
    at.slider(key="_eval_threshold_w").set_value(0.02).run()  # then the user's own choice stays
    at.switch_page("pages/recommendations.py").run()
    assert not at.exception, at.exception
    assert at.session_state["threshold"] == pytest.approx(0.02)


def test_evaluating_the_active_model_on_its_own_held_out_targets_warns_instead_of_failing(home):
    at = evaluated(dataset_name=EARLY, model_name="demo-model")
    assert (at.session_state["dataset_name"], at.session_state["model_name"]) == (EARLY, "demo-model")
    assert not at.error
    assert any("Model 'demo-model' was trained on" in w.value and "held out as test targets" in w.value for w in at.warning)
    assert not at.dataframe and not at.get("plotly_chart")


class _Result:
    """The part of EvaluationResult that comparison_frame reads, over hand-made per-shopper NDCG@10 / HR@10."""

    def __init__(self, per_user: dict, masks: dict):
        from crossrec_core.evaluation import metrics as M

        self.per_user, self.masks, self._M = per_user, masks, M
        self.subset_sizes = {s: int(m.sum()) for s, m in masks.items()}

    def value(self, method, subset, metric):
        return float(self.per_user[method][metric][self.masks[subset]].mean())

    def difference(self, a, b, subset, metric):
        m = self.masks[subset]
        return self._M.paired_bootstrap(self.per_user[a][metric][m], self.per_user[b][metric][m])


def test_the_comparison_says_real_only_when_the_interval_excludes_zero():
    from pages.evaluation_view import comparison_frame

    n = 400
    hit = (np.arange(n) % 2 == 0).astype(float)  # a model that finds every other target
    noise = np.random.default_rng(0).permutation(hit)  # as good on average, other shoppers
    per_user = {"good": {"NDCG@10": hit, "HR@10": hit}, "none": {"NDCG@10": np.zeros(n), "HR@10": np.zeros(n)},
                "metric": {"NDCG@10": noise, "HR@10": noise}}
    masks = {"all": np.ones(n, bool), "switch": np.arange(n) < 100, "novel": np.zeros(n, bool)}
    frame = comparison_frame(_Result(per_user, masks), "good", "none")
    assert frame["shoppers"].tolist() == ["All shoppers"] * 2 + ["Next product in another category"] * 2  # novel: empty
    assert frame["n"].tolist() == [400, 400, 100, 100]
    assert frame["good"].tolist() == [0.5, 0.5, 0.5, 0.5] and frame["difference"].tolist() == [0.5] * 4
    assert set(frame["verdict"]) == {"a real difference"}
    same = comparison_frame(_Result(per_user, masks), "good", "metric")  # a model named like a column keeps its own
    assert list(same.columns[3:5]) == ["good", "metric (model)"]
    assert same["verdict"].iloc[0] == "within noise" and same["difference"].iloc[0] == 0.0


# -- metric help, the best value, the report ---------------------------------------------------------


def test_each_metric_column_explains_itself_and_the_best_value_is_marked(home):
    from crossrec_core.evaluation.metric_help import best_methods, metric_help

    at = evaluated()
    frame = next(d for d in at.dataframe if "HR@10" in d.value.columns)  # the first tab: all shoppers
    table = frame.value
    assert len(table.columns) == 11
    config = json.loads(frame.proto.columns)
    for column in table.columns:
        assert config[column]["help"] == metric_help(column) != ""
    marked = {(int(r), int(c)) for r, c in re.findall(r"_row(\d+)_col(\d+)", frame.proto.arrow_data.styler.styles)}
    best = best_methods(table, 3)
    expected = {(table.index.get_loc(m), j) for j, col in enumerate(table.columns) for m in best[col]}
    assert marked and marked == expected
    assert any(c.value.startswith("Shaded: the best value in each column") for c in at.caption)


def test_the_evaluation_downloads_as_one_offline_html_report(home, monkeypatch):
    """The button is there; the file it serves (built on click) holds the page's tables, verdicts, charts
    and the model card, and loads nothing from anywhere."""
    from streamlit.delta_generator import DeltaGenerator

    served = {}
    original = DeltaGenerator.download_button

    def spy(self, label, data, *args, **kwargs):
        served[kwargs.get("key")] = (data, kwargs)
        return original(self, label, data, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", spy)
    at = evaluated()
    button = next(b for b in at.get("download_button") if b.proto.id.endswith("-eval_report"))
    assert "report (HTML)" in button.proto.label and not button.proto.disabled
    build, kwargs = served["eval_report"]
    assert callable(build) and kwargs["mime"] == "text/html"
    assert kwargs["file_name"] == "crossrec-evaluation-demo-model-on-demo-store.html"
    page = build()
    assert page.startswith("<!DOCTYPE html>")
    shown = [c.value for c in at.caption]
    lead = next(c for c in shown if "95% interval" in c).replace("\\", "")  # the page's markdown escapes the names
    assert lead in page
    assert next(c for c in shown if c.startswith("The curve is on the test targets")).replace("'", "&#x27;") in page
    assert page.count('class="plotly-graph-div"') == 5  # reliability, per category, threshold, observed, learned
    assert "<h2>Model card: demo-model</h2>" in page and '<td class="field">Trained on</td><td class="field">demo-store</td>' in page
    assert "journey steps recovered" in page
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "", page, flags=re.S)
    assert "<script src" not in page and "cdn" not in markup and "http" not in markup
