"""AppTest tests of every studio page on the demo store with a tiny trained model.

AppTest cannot click plotly charts or upload files: map selections are driven through session state
(the page reads ``map_selection``); uploads are covered by tests/test_browser.py.
"""

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig

APP = str(Path(__file__).resolve().parent.parent / "app.py")
N_USERS = 600
RECS, MAP, EVAL = "pages/recommendations.py", "pages/embedding_map.py", "pages/evaluation.py"


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """Return a workspace holding a small demo store (600 shoppers, 300 items, the 12 categories and the
    planted journeys) and a tiny 'demo-model' (1 epoch, text off), built once per module."""
    from crossrec_core.training.bootstrap import DEMO_DATASET, DEMO_MODEL
    from crossrec_core.data.demo_store import make_demo_store
    from crossrec_core.data.load import load_log
    from crossrec_core.storage.datasets import save_dataset
    from crossrec_core.storage.registry import save_model
    from crossrec_core.training.loop import train_model

    root = tmp_path_factory.mktemp("studio")
    store = make_demo_store(seed=0, n_users=N_USERS, n_items=300)
    ds = load_log(store.interactions, store.items, name=DEMO_DATASET)
    save_dataset(ds, DEMO_DATASET, root=root, extras={"journeys": store.journeys})
    cfg = ModelConfig(
        item=ItemEncoderConfig(dim=16, use_text=False),
        user=UserEncoderConfig(kind="gru", dim=16, max_len=20),
        train=TrainConfig(epochs=1, fusion_epochs=1, device="cpu", seed=0),
    )
    save_model(train_model(ds, cfg, name=DEMO_MODEL), root / "models" / DEMO_MODEL)
    return root


@pytest.fixture
def home(demo_home, monkeypatch):
    monkeypatch.setenv("CROSSREC_HOME", str(demo_home))
    return demo_home


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path))
    return tmp_path


def open_page(page: str | None = None, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at


def table(at: AppTest, *columns: str):
    """Return the first displayed dataframe holding all ``columns`` (AppTest does not expose a table's key)."""
    for df in at.dataframe:
        value = df.value
        if set(columns) <= set(value.columns):
            return value
    raise AssertionError(f"no dataframe with columns {columns}; shown: {[list(d.value.columns) for d in at.dataframe]}")


def plotly_spec(at: AppTest, key: str) -> dict:
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith("-" + key)]
    assert charts, f"no plotly chart with key {key}"
    return json.loads(charts[0].proto.spec)


# -- pages without a workspace: calls to action, never errors -------------------------------------


@pytest.mark.parametrize("page", ["pages/train.py", MAP, RECS, EVAL, "pages/push.py"])
def test_pages_without_data_show_a_call_to_action(empty_home, page):
    at = open_page(page)
    assert not at.error
    assert any("No dataset yet" in i.value for i in at.info)


def test_home_on_an_empty_workspace_offers_the_demo(empty_home):
    at = open_page()
    assert at.title[0].value == "crossrec studio"
    assert [m.value for m in at.metric] == ["0", "0"]
    assert any(b.key == "home_demo" for b in at.button)


def test_a_page_address_opened_first_on_a_fresh_server_runs_through_the_router(home):
    """A fresh process (as after a server start) whose first run is /recommendations: Streamlit's legacy
    pages/ discovery would run the page file alone (no sidebar pickers, "No dataset yet"); the studio
    must instead route it through app.py. A subprocess, because the switch is made once per process."""
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        "at = AppTest.from_file(sys.argv[1], default_timeout=120)\n"
        "at.switch_page('pages/recommendations.py')\n"  # before the first run: the server's first request
        "at.run()\n"
        "print(json.dumps({'sidebar': [s.key for s in at.sidebar.selectbox], 'info': [i.value for i in at.info],"
        " 'exception': [str(e.value) for e in at.exception]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, APP], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, CROSSREC_HOME=str(home)), cwd=Path(APP).parent)
    assert out.returncode == 0, out.stderr[-3000:]
    shown = json.loads(out.stdout.strip().splitlines()[-1])
    assert shown["exception"] == []
    assert shown["sidebar"] == ["_sb_dataset", "_sb_model"]
    assert not any("No dataset yet" in i for i in shown["info"])


# -- pages on the demo store ------------------------------------------------------------------------


def test_home_lists_the_workspace_and_the_sidebar_selects_it(home):
    at = open_page()
    assert [m.value for m in at.metric] == ["1", "1"]
    assert table(at, "model", "encoder")["model"].tolist() == ["demo-model"]
    assert at.sidebar.selectbox(key="_sb_dataset").value == "demo-store"
    assert at.sidebar.selectbox(key="_sb_model").value == "demo-model"


def test_data_page_profiles_the_active_dataset(home):
    at = open_page("pages/data.py")
    assert [m.value for m in at.metric][:3] == [f"{N_USERS:,}", "300", "12"]
    assert len(at.get("plotly_chart")) == 3  # categories, events per shopper, transition heatmap
    assert "500 MB" in at.caption[0].value
    counts = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "Events per shopper" in c.proto.spec)
    assert counts["layout"]["yaxis"]["type"] == "log" and counts["layout"]["yaxis"]["dtick"] == 1  # 1, 10, 100: no "5, 2"


@contextlib.contextmanager
def fake_job(job_id: str, model_name: str, **extra):
    """A running job's progress file for ``model_name`` on demo-store (this process as its worker); yields
    ``update(**changes)``, which rewrites the file; the job folder is removed afterwards."""
    from crossrec_core.training import jobs

    folder = jobs.jobs_dir() / job_id
    folder.mkdir(parents=True, exist_ok=True)
    progress = jobs._progress_dict(job_id, "demo-store", model_name, jobs.STATUS_RUNNING, pid=os.getpid(),
                                   phase="train", epoch=2, n_epochs=4, step=5, n_steps=10, loss=1.25, **extra)

    def update(**changes) -> None:
        progress.update(changes)
        (folder / "progress.json").write_text(json.dumps(progress))

    update()
    try:
        yield update
    finally:
        shutil.rmtree(folder)


def test_train_page_follows_a_job_from_its_progress_file(home):
    from crossrec_core.training import jobs

    with fake_job("20990101-000000-abcdef", "m2", loss_curve=[[0.5, 2.0], [1.0, 1.6]], valid_curve=[[1, 0.1]]) as update:
        at = open_page("pages/train.py")
        bar = at.get("progress")[0]
        assert "Epoch 2 of at most 4 (early stopping)" in bar.proto.text and "loss 1.250" in bar.proto.text
        assert bar.proto.value == 37  # (1 + 5/10) / 4
        assert any(b.key == "train_cancel" for b in at.button)
        update(status=jobs.STATUS_FAILED, message="The log has no events.")
        at.run()
        assert any("The log has no events." in e.value for e in at.error)


def test_train_page_without_a_dataset_still_shows_a_running_job(empty_home):
    """A job keeps running whatever dataset is active (none, after a delete): the page shows its panel and a
    call to action, not just the call to action."""
    with fake_job("20990101-000000-0d0d0d", "m4"):
        at = open_page("pages/train.py")
        assert any("No dataset yet" in i.value for i in at.info)
        assert "Epoch 2 of at most 4" in at.get("progress")[0].proto.text
        assert any(b.key == "train_cancel" for b in at.button)
        assert not any(b.key == "train_name" for b in at.text_input)  # no form to start a job on nothing


def test_a_training_job_shows_in_the_sidebar_of_every_page_and_its_end_is_announced_once(home):
    from crossrec_core.training import jobs

    with fake_job("20990101-000000-fedcba", "m3") as update:
        at = open_page("pages/data.py")
        line = [c.value for c in at.sidebar.caption if "Training m3" in c.value]
        assert line and "Epoch 2 of at most 4" in line[0]
        seen = dict(at.session_state["_sb_jobs"])  # this session saw it running
        assert seen == {"20990101-000000-fedcba": "m3"}
        update(status=jobs.STATUS_DONE, message="Saved as 'm3'.")
        at = AppTest.from_file(APP, default_timeout=120)  # the same session's next run, on another page
        at.session_state["_sb_jobs"] = seen
        at.run()
        assert not at.exception and [t.value for t in at.toast if "Training m3" in t.value]
        assert not [c for c in at.sidebar.caption if "Training m3" in c.value]
        assert at.session_state["_sb_jobs"] == {}  # announced once


@pytest.mark.parametrize("private", [False, True])
def test_train_page_starts_a_private_job_only_when_asked(home, monkeypatch, private):
    from crossrec_core.training import jobs

    started = []
    monkeypatch.setattr(jobs, "start_training_job", lambda ds, name, config: started.append(config) or "20990101-000000-aaaaaa")
    at = open_page("pages/train.py")
    at.toggle(key="train_private").set_value(private)
    at.select_slider(key="train_epsilon").set_value(4)
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception and len(started) == 1
    assert started[0].train.dp_epsilon == (4.0 if private else None)
    # the test store's 600 shoppers are far too few for private training: the form says so beside the budget
    assert [c for c in at.caption if "private training needs tens of thousands" in c.value]

def test_recommendations_page_reacts_to_its_controls(home):
    at = open_page(RECS)
    first = table(at, "explanation")
    assert len(first) == 10 and list(first.columns[:4]) == ["rank", "item_id", "title", "category"]
    user = at.session_state["rec_user"]

    # threshold: every shown probability is at least the threshold, and it is shared with Evaluation
    t = float(np.round(first["probability"].median(), 3))  # calibrated probabilities are small: a 0.001 step
    at.slider(key="_threshold_w").set_value(t).run()
    shown = table(at, "explanation")
    assert (shown["probability"] >= t - 1e-6).all() and len(shown) < 10
    assert at.session_state["threshold"] == t
    at.slider(key="_threshold_w").set_value(0.0).run()

    # cross-category only: no recommended category occurs in the history
    from crossrec_core.storage.datasets import load_dataset

    ds = load_dataset("demo-store")
    u = int(ds.user_index([user])[0])
    hist_cats = set(ds.category_names[ds.item_category[ds.history(u)[0]]])
    at.toggle(key="_cross_w").set_value(True).run()
    cross = table(at, "explanation")
    assert len(cross) and not (set(cross["category"]) & hist_cats)
    at.toggle(key="_cross_w").set_value(False).run()

    # what-if: adding an item changes the list, and the added item is never recommended back
    added = str(first["item_id"].iloc[0])
    assert at.multiselect(key="_whatif_add_w").proto.select_all == 0  # no "Select N matches" in the what-if list
    at.multiselect(key="_whatif_add_w").set_value([added]).run()
    whatif = table(at, "explanation")
    assert added not in set(whatif["item_id"]) and whatif["item_id"].tolist() != first["item_id"].tolist()

    # another user: a different history and list
    other = str(ds.user_ids[1])
    at.selectbox(key="_rec_user_w").set_value(other).run()
    assert at.session_state["rec_user"] == other and at.session_state["whatif_add"] == []
    assert table(at, "explanation")["item_id"].tolist() != first["item_id"].tolist()
    assert not at.exception


def test_shopper_search_switches_the_shopper_everywhere_on_the_page(home):
    """Typing in 'Find a shopper by id' shows the match's history, heading and list at once (not the
    previous shopper's), and the list is the one shown when that shopper is picked directly."""
    at = open_page(RECS)
    first_user = at.session_state["rec_user"]
    target = "U00417"
    assert first_user != target
    at.text_input(key="rec_search").input("00417").run()
    assert not at.exception
    assert at.session_state["rec_user"] == target
    assert at.selectbox(key="_rec_user_w").value == target
    heading = next(h.value for h in at.subheader if h.value.startswith("Top"))
    assert heading.endswith(f"shopper {target}")
    # the history is also a list of products, newest first (not only a timeline)
    from crossrec_core.storage.datasets import load_dataset

    ds = load_dataset("demo-store")
    listed = next(d.value for d in at.dataframe if list(d.value.columns[:2]) == ["when", "title"])
    assert listed["title"].tolist() == ds.item_titles[ds.history(int(ds.user_index([target])[0]))[0]][::-1].tolist()
    searched = table(at, "explanation")["item_id"].tolist()
    direct = open_page(RECS, rec_user=target)
    assert table(direct, "explanation")["item_id"].tolist() == searched
    # clearing the search keeps the shopper just found
    at.text_input(key="rec_search").input("").run()
    assert at.session_state["rec_user"] == target
    # a search without a match says so and keeps the shopper
    at.text_input(key="rec_search").input("nosuchshopper").run()
    assert not at.exception and at.session_state["rec_user"] == target
    assert any("nosuchshopper" in c.value for c in at.caption)


@pytest.mark.parametrize("user", ["U00003", "U00250"])
def test_the_page_list_is_the_recommenders_list_for_that_user_with_real_timestamps(home, user):
    """The one-shopper preview feeds the encoder the shopper's real event times and types, so its list
    (items and probabilities) is exactly Recommender(model, ds).recommend(user_id), as in the CLI."""
    from crossrec_core.storage.datasets import load_dataset
    from crossrec_core.serving.recommender import Recommender
    from crossrec_core.storage.registry import load_model

    expected = Recommender(load_model(home / "models" / "demo-model"), load_dataset("demo-store")).recommend(user, k=10)
    shown = table(open_page(RECS, rec_user=user), "explanation")
    assert shown["item_id"].tolist() == [r.item_id for r in expected.items]
    np.testing.assert_allclose(shown["probability"].to_numpy(), [r.probability for r in expected.items], rtol=1e-6)


def test_what_if_additions_come_just_after_the_last_real_event(home):
    from crossrec_core.storage.datasets import load_dataset
    from crossrec_core.serving.shoppers import history_frame

    ds = load_dataset("demo-store")
    u = int(ds.user_index(["U00003"])[0])
    items, times, events = ds.history(u)
    frame = history_frame(ds, "U00003", add=["P00001", "P00002"], remove=[str(ds.item_ids[items[0]])])
    assert list(frame.columns) == ["item_id", "event", "timestamp"]
    kept = ds.item_ids[items] != ds.item_ids[items[0]]
    assert frame["item_id"].tolist() == [*ds.item_ids[items][kept], "P00001", "P00002"]
    assert frame["timestamp"].tolist() == [*times[kept], times[-1] + 1, times[-1] + 2]
    assert frame["event"].tolist()[: kept.sum()] == ds.event_names[events][kept].tolist()


def test_recommendations_for_all_users_are_prepared_for_download(home):
    at = open_page(RECS)
    at.button(key="rec_all").click().run()
    assert not at.exception
    csv = at.session_state["_rec_all_csv"].decode()
    header, *rows = csv.strip().splitlines()
    assert header.startswith("user_id,rank,item_id,title,category,probability")
    assert "explanation" not in header
    assert len(rows) == N_USERS * 10
    # with reasons: the same rows plus a non-empty explanation per item
    at.toggle(key="rec_all_explain").set_value(True).run()
    at.button(key="rec_all").click().run()
    assert not at.exception
    frame = pd.read_csv(io.BytesIO(at.session_state["_rec_all_csv"]))
    assert list(frame.columns)[-1] == "explanation" and len(frame) == N_USERS * 10
    assert frame["explanation"].fillna("").str.len().gt(0).all()


def test_push_a_category_lists_the_audience_and_its_products_and_exports_them(home):
    """Issue 18.1: for a chosen category, the shoppers most likely to buy there next (best first) and the
    products that would bring them, each downloadable; shoppers new to the category only, on request."""
    at = open_page("pages/push.py")
    assert any("Find the audience" in i.value for i in at.info)  # nothing computed before the button
    category = at.selectbox(key="push_category").options[0]
    at.selectbox(key="push_category").set_value(category)
    at.button[0].click().run()  # the form's submit button
    assert not at.exception
    key, aud = at.session_state["_push"]
    assert key[2] == category and aud.category == category
    shoppers = table(at, "user_id", "chance")
    assert len(shoppers) == min(len(aud.shoppers), 500) > 0
    assert shoppers["chance"].is_monotonic_decreasing
    assert "Expected to take one of these products next" in [m.label for m in at.metric]
    bars = plotly_spec(at, "push_items_chart")["data"][0]
    assert bars["orientation"] == "h" and len(bars["y"]) == min(15, len(aud.items))
    at.toggle(key="push_new_only").set_value(True)
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state["_push"][1].shoppers["new_to_category"].all()


def test_map_page_draws_pca_users_a_path_and_the_selection(home):
    at = open_page(MAP)
    spec = plotly_spec(at, "map_chart")
    names = [t.get("name") for t in spec["data"]]
    assert len([n for n in names if n not in ("users", "history", "recommended", "this user")]) == 12
    assert not spec["layout"].get("annotations")  # nobody chosen yet: no arrows
    at.toggle(key="map_users").set_value(True).run()
    assert "users" in [t.get("name") for t in plotly_spec(at, "map_chart")["data"]]
    # a chosen user: history, stars for the recommendations and one arrow per recommendation
    at.selectbox(key="_map_user_w").set_value(at.selectbox(key="_map_user_w").options[1]).run()
    spec = plotly_spec(at, "map_chart")
    names = [t.get("name") for t in spec["data"]]
    assert {"history", "recommended", "this user"} <= set(names)
    rec = next(t for t in spec["data"] if t.get("name") == "recommended")
    assert len(spec["layout"]["annotations"]) == len(rec["text"]) == 10
    # a lasso selection (driven through session state) lists exactly those items
    at.session_state["map_selection"] = [3, 1, 2]
    at.run()
    sel = table(at, "popularity")
    assert len(sel) == 3
    assert not at.exception


def test_the_map_can_colour_each_product_by_the_part_that_places_it(home):
    """"Colour by: strongest part" groups the products by the item-encoder part with the largest share of
    their vector; the shares are each part's length over the parts' total (rows sum to 1), and a lasso on
    that map still lists the products inside."""
    from crossrec_core.storage.registry import load_model

    model = load_model(home / "models" / "demo-model")
    names, shares = model.part_shares()
    assert names[:2] == ["ID", "category"] and shares.shape == (model.n_items, len(names))
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-5)
    at = open_page(MAP)
    at.radio(key="map_colour").set_value("strongest part").run()
    assert not at.exception
    traces = {t.get("name") for t in plotly_spec(at, "map_chart")["data"]}
    expected = {f"mostly {names[j]}" for j in np.unique(shares.argmax(axis=1))}
    assert traces - {"users", "history", "recommended", "this user"} == expected


def test_map_page_does_not_compute_umap_on_start(home):
    at = open_page(MAP, map_method="UMAP")
    assert any(b.key == "map_umap" for b in at.button)  # waits for the button
    assert not at.get("plotly_chart")


def test_the_umap_notice_is_gone_once_the_map_is_drawn(home, monkeypatch):
    """Clicking "Compute the UMAP layout" draws the map in the same run, and the notice that the layout takes
    time (and its button) leaves the page then. The layout itself is PCA's here: UMAP's fit is not the point."""
    from pages import caches_data

    pca = caches_data.get_projection
    monkeypatch.setattr(caches_data, "get_projection", lambda model_name, method: pca(model_name, "pca"))
    at = open_page(MAP, map_method="UMAP")
    assert any("UMAP layout takes" in i.value for i in at.info)
    at.button(key="map_umap").click().run()
    assert not at.exception and at.get("plotly_chart")
    assert not any("UMAP layout takes" in i.value for i in at.info)
    assert not any(b.key == "map_umap" for b in at.button)


def test_evaluation_page_compares_with_baselines_and_shares_the_threshold(home):
    at = open_page(EVAL, threshold=0.3)
    assert not at.dataframe  # nothing computed before the button
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception
    assert not any(b.key == "eval_run" for b in at.button)  # the results replace the button
    methods = table(at, "HR@10").index.tolist()
    assert methods[0] == "crossrec" and {"popularity", "item-kNN"} <= set(methods)
    assert at.slider(key="_eval_threshold_w").value == 0.3
    spec = plotly_spec(at, "eval_threshold_curve")
    assert any(s.get("x0") == 0.3 for s in spec["layout"].get("shapes", []))
    assert len(table(at, "recovered")) > 0
    # each subset says whether the model's lead over the best other method is more than noise
    leads = [c.value for c in at.caption if "95% interval" in c.value]
    assert len(leads) >= 2 and all("paired bootstrap" in c for c in leads)
    assert all(("a real difference" in c) or ("within noise" in c) for c in leads)
    # the figures become the model card's on Home and Train, with where they were measured
    ndcg = float(table(at, "NDCG@10").loc["crossrec", "NDCG@10"])
    fields = card_fields(open_page(None))
    shoppers = next(c.value for c in at.caption if c.value.startswith("All shoppers: ")).split(": ")[1]  # "596 shoppers"
    assert fields["Measured on"] == f"demo-store, {shoppers}' last events" and fields["Measured"].endswith("UTC")
    assert float(fields["NDCG@10"]) == pytest.approx(ndcg, abs=1e-4) and "Test figures" not in fields
    record = home / "models" / "demo-model" / "test_figures.json"
    stamp = record.stat().st_mtime_ns
    at.run()  # a rerun with the same figures rewrites nothing (the folder's mtime is the model's cache key)
    assert record.stat().st_mtime_ns == stamp


# -- datasets and models stay paired ---------------------------------------------------------------


@pytest.fixture
def scratch_home(demo_home, tmp_path, monkeypatch):
    """A copy of the demo workspace (tests here add and delete datasets, models and jobs), plus a second
    dataset 'other-shop' (other events, same catalogue) and a copy of the model saved as 'other-model'."""
    import shutil

    from crossrec_core.data.load import load_log
    from crossrec_core.storage.datasets import load_dataset, save_dataset

    root = tmp_path / "ws"
    shutil.copytree(demo_home, root, ignore=shutil.ignore_patterns("jobs"))
    monkeypatch.setenv("CROSSREC_HOME", str(root))
    ds = load_dataset("demo-store")
    items, times, events = ds.seqs.items, ds.seqs.times, ds.seqs.events
    users = np.repeat(ds.user_ids, np.diff(ds.seqs.offsets))
    half = users < ds.user_ids[N_USERS // 2]
    inter = pd.DataFrame({"user_id": users[half], "item_id": ds.item_ids[items][half],
                          "timestamp": times[half], "event": ds.event_names[events][half]})
    catalogue = pd.DataFrame({"item_id": ds.item_ids, "category": ds.category_names[ds.item_category],
                              "title": ds.item_titles})
    save_dataset(load_log(inter, catalogue, name="other-shop"), "other-shop")
    shutil.copytree(root / "models" / "demo-model", root / "models" / "other-model")
    (root / "models" / "other-model" / "fingerprint.json").write_text(
        json.dumps({"data_fingerprint": load_dataset("other-shop").fingerprint()}))
    return root


def finished_job(dataset: str, model: str) -> str:
    from crossrec_core.training import jobs

    job_id = "20990101-000000-f1n15h"
    folder = jobs.jobs_dir() / job_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "progress.json").write_text(json.dumps(jobs._progress_dict(
        job_id, dataset, model, jobs.STATUS_DONE, phase="done", epoch=1, n_epochs=3, epochs_run=2, best_epoch=1,
        message=f"Saved as '{model}'.", metrics={"best_epoch": 1})))
    return job_id


def test_a_finished_job_on_another_dataset_does_not_change_the_active_model(scratch_home):
    job_id = finished_job("other-shop", "other-model")
    at = open_page("pages/train.py", dataset_name="demo-store", model_name="demo-model", job_id=job_id)
    assert (at.session_state["dataset_name"], at.session_state["model_name"]) == ("demo-store", "demo-model")
    assert any("Finished: best epoch 1 of 2 run" in s.value for s in at.success)
    assert any("trained on other\\-shop" in i.value for i in at.info)
    at.button(key="train_use_pair").click().run()  # the user may take the pair, both at once
    assert (at.session_state["dataset_name"], at.session_state["model_name"]) == ("other-shop", "other-model")


def test_a_finished_job_on_the_active_dataset_becomes_the_active_model(scratch_home):
    job_id = finished_job("other-shop", "other-model")
    at = open_page("pages/train.py", dataset_name="other-shop", model_name="demo-model", job_id=job_id)
    assert at.session_state["model_name"] == "other-model"


def test_the_sidebar_names_the_dataset_each_model_was_trained_on(scratch_home):
    at = open_page(dataset_name="demo-store", model_name="demo-model")
    picker = at.sidebar.selectbox(key="_sb_model")
    assert picker.options == ["demo-model · demo-store", "other-model · other-shop"]
    assert not any("not trained on the active dataset" in c.value for c in at.sidebar.caption)
    # switching the dataset brings its own model along
    at.sidebar.selectbox(key="_sb_dataset").set_value("other-shop").run()
    assert at.session_state["model_name"] == "other-model"
    # a deliberate mismatch is allowed, and said (a fresh AppTest: only its first run draws app.py's sidebar)
    at = open_page(dataset_name="other-shop", model_name="demo-model")
    assert any("not trained on the active dataset" in c.value for c in at.sidebar.caption)
    assert table(open_page("pages/train.py"), "trained on")["trained on"].tolist() == ["demo-store", "other-shop"]


def test_deleting_a_model_asks_first_and_leaves_no_stale_message(scratch_home):
    job_id = finished_job("demo-store", "other-model")
    at = open_page("pages/train.py", dataset_name="demo-store", job_id=job_id)
    assert any("Saved as 'other-model'" in s.value for s in at.success)
    at.selectbox(key="train_delete_name").set_value("other-model").run()
    at.button(key="train_delete").click().run()
    assert (scratch_home / "models" / "other-model").is_dir()  # nothing deleted yet: a question first
    assert any("for good" in w.value for w in at.warning)
    at.button(key="train_delete_no").click().run()
    assert (scratch_home / "models" / "other-model").is_dir() and not any("for good" in w.value for w in at.warning)
    at.button(key="train_delete").click().run()
    at.button(key="train_delete_yes").click().run()
    assert not at.exception
    assert not (scratch_home / "models" / "other-model").exists()
    assert any("Deleted the model 'other-model'" in s.value for s in at.success)
    assert not any("Saved as" in s.value for s in at.success)  # the job's old message is gone
    assert any("has since been deleted" in c.value for c in at.caption)
    assert at.session_state["model_name"] != "other-model"
    assert table(at, "trained on")["model"].tolist() == ["demo-model"]


def test_deleting_a_dataset_asks_first(scratch_home):
    at = open_page("pages/data.py", dataset_name="other-shop")
    at.selectbox(key="data_delete_name").set_value("other-shop").run()
    at.button(key="data_delete").click().run()
    assert (scratch_home / "datasets" / "other-shop").is_dir()
    at.button(key="data_delete_yes").click().run()
    assert not at.exception and not (scratch_home / "datasets" / "other-shop").exists()
    assert any("Deleted the dataset 'other-shop'" in s.value for s in at.success)
    assert at.session_state["dataset_name"] != "other-shop"


def test_saving_an_upload_makes_it_the_active_dataset_with_a_notice(scratch_home):
    at = open_page("pages/data.py")
    csv = "user_id,item_id,timestamp\n" + "".join(f"u{k % 7},P{k % 40:05d},{1_700_000_000 + k}\n" for k in range(200))
    at.file_uploader(key="data_log").set_value(("fresh.csv", csv.encode(), "text/csv"))
    at.run()
    at.button(key="data_save").click().run()
    assert not at.exception and not at.error
    assert at.session_state["dataset_name"] == "fresh"
    assert any("'fresh' is now the active dataset" in s.value for s in at.success)



def test_an_upload_with_item_vectors_saves_them_into_the_dataset(scratch_home):
    from crossrec_core.storage.datasets import load_dataset

    at = open_page("pages/data.py")
    csv = "user_id,item_id,timestamp\n" + "".join(f"u{k % 7},P{k % 40:05d},{1_700_000_000 + k}\n" for k in range(200))
    vectors = "item_id,vec_0,vec_1,vec_2\n" + "".join(f"P{k:05d},{k / 40},{1 - k / 40},{k % 3}\n" for k in range(40))
    at.file_uploader(key="data_log").set_value(("vec-shop.csv", csv.encode(), "text/csv"))
    at.file_uploader(key="data_vectors").set_value(("vectors.csv", vectors.encode(), "text/csv"))
    at.run()
    assert not at.exception and not at.error
    assert any("3 values for each of the 40 items" in s.value for s in at.success)
    at.button(key="data_save").click().run()
    assert not at.exception and not at.error
    saved = load_dataset("vec-shop")
    assert saved.vector_columns == ("vec_0", "vec_1", "vec_2")
    row = saved.items.set_index("item_id").loc["P00007", ["vec_0", "vec_1", "vec_2"]].to_numpy(float)
    assert np.allclose(row, [7 / 40, 1 - 7 / 40, 1])


def test_item_vectors_for_the_saved_dataset_are_saved_with_it_and_a_missing_item_is_named(scratch_home):
    from crossrec_core.storage.datasets import load_dataset

    ids = load_dataset("other-shop").item_ids
    at = open_page("pages/data.py", dataset_name="other-shop")
    partial = "item_id,vec_0\n" + "".join(f"{i},1.0\n" for i in ids[1:])
    at.file_uploader(key="data_vectors").set_value(("partial.csv", partial.encode(), "text/csv")).run()
    assert not at.exception
    assert any("1 of the log's" in e.value and str(ids[0]) in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "data_save_vectors"]  # nothing to save
    assert load_dataset("other-shop").vector_columns == ()

    full = "item_id,vec_0,vec_1\n" + "".join(f"{i},{k},-1.5\n" for k, i in enumerate(ids))
    at.file_uploader(key="data_vectors").set_value(("full.csv", full.encode(), "text/csv")).run()
    at.button(key="data_save_vectors").click().run()
    assert not at.exception and not at.error
    saved = load_dataset("other-shop")
    assert saved.vector_columns == ("vec_0", "vec_1")
    assert saved.items.set_index("item_id").loc[ids[5], "vec_0"] == 5


def test_the_items_table_has_its_own_mapping_and_the_category_level_can_be_chosen(scratch_home):
    at = open_page("pages/data.py")
    log = "customer_id,article_id,t_dat\n" + "".join(f"c{k % 9},a{k % 12},2024-05-{1 + k % 28:02d}\n" for k in range(120))
    articles = "article_id,prod_name,product_group_name,product_type_name\n" + "".join(
        f"a{k},Item {k},{'Garment' if k % 2 else 'Shoes'},{['Dress', 'Boot', 'Coat'][k % 3]}\n" for k in range(12))
    at.file_uploader(key="data_log").set_value(("log.csv", log.encode(), "text/csv"))
    at.file_uploader(key="data_items").set_value(("articles.csv", articles.encode(), "text/csv")).run()
    assert not at.exception and not at.error
    assert at.selectbox(key="map_items_category").value == "product_group_name"  # the guess, shown
    at.selectbox(key="map_items_category").set_value("product_type_name").run()
    at.text_input(key="data_name").set_value("levels")
    at.button(key="data_save").click().run()
    assert not at.exception and not at.error

    from crossrec_core.storage.datasets import load_dataset

    assert sorted(load_dataset("levels").category_names) == ["Boot", "Coat", "Dress"]

# -- hostile text renders as plain text ------------------------------------------------------------

HOSTILE_USER = "<b>u</b>**0**"
HOSTILE_TITLE = "<script>alert(1)</script> [x](javascript:alert(1))"
HOSTILE_CATEGORY = "<img src=x onerror=alert(1)>"


def test_mirror_writes_a_widget_key_only_when_it_differs_from_the_kept_value(monkeypatch):
    """A widget key the script writes is sent to the browser as the widget's value and overwrites key presses
    made during the run (ten presses moved K from 10 to 19): mirror leaves an up-to-date widget key alone."""
    import streamlit as st

    from pages.state import mirror

    class Recording(dict):
        writes: list = []

        def __setitem__(self, key, value):
            self.writes.append(key)
            super().__setitem__(key, value)

    state = Recording(k=12, _k_w=12, threshold=0.2, _threshold_w=0.1, diversity=0.5)
    monkeypatch.setattr(st, "session_state", state)
    mirror(("_k_w", "k"), ("_threshold_w", "threshold"), ("_diversity_w", "diversity"))
    assert state.writes == ["_threshold_w", "_diversity_w"]  # changed by the script / not drawn last run
    assert state["_threshold_w"] == 0.2 and state["_diversity_w"] == 0.5 and state["_k_w"] == 12


def test_md_escape_neutralises_markdown_and_html():
    from pages.state import md_escape

    out = md_escape(HOSTILE_USER + " " + HOSTILE_TITLE)
    assert "<" not in out.replace("\\<", "") and "**" not in out.replace("\\*", "")
    assert out.startswith("\\<b\\>u\\</b\\>\\*\\*0\\*\\*")


def test_hostile_ids_titles_and_categories_render_as_plain_text(tmp_path, monkeypatch):
    import pandas as pd

    from crossrec_core.data.dataset import from_frames
    from crossrec_core.storage.datasets import save_dataset
    from crossrec_core.storage.registry import save_model
    from crossrec_core.training.loop import train_model

    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path))
    users = [HOSTILE_USER] + [f"u{i}" for i in range(1, 30)]
    rows = [(u, f"i{(k + j) % 12}", j) for k, u in enumerate(users) for j in range(4)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(12)],
                          "category": [HOSTILE_CATEGORY if i % 3 == 0 else f"C{i % 3}" for i in range(12)],
                          "title": [HOSTILE_TITLE if i == 0 else f"Item {i}" for i in range(12)]})
    ds = from_frames(inter, items, name="hostile")
    save_dataset(ds, "hostile")
    cfg = ModelConfig(item=ItemEncoderConfig(dim=8, use_text=False, use_attributes=False),
                      user=UserEncoderConfig(kind="gru", dim=8, max_len=8),
                      train=TrainConfig(epochs=1, fusion_epochs=1, device="cpu", seed=0))
    save_model(train_model(ds, cfg, name="m"), tmp_path / "models" / "m")

    at = open_page(RECS, rec_user=HOSTILE_USER)
    assert at.session_state["rec_user"] == HOSTILE_USER
    heading = next(h.value for h in at.subheader if h.value.startswith("Top"))
    assert "\\<b\\>u\\</b\\>\\*\\*0\\*\\*" in heading  # escaped: shown literally, not as bold/HTML
    shown = table(at, "explanation")
    assert set(shown["category"]) <= set(items["category"])  # raw strings in a dataframe cell (plain text)
    for page in (MAP, EVAL, "pages/data.py", "pages/train.py"):
        at.switch_page(page)
        at.run()
        assert not at.exception, (page, at.exception)
    at.switch_page(MAP)
    at.run()
    spec = plotly_spec(at, "map_chart")
    assert "<img" not in json.dumps(spec["data"]) and "<script>" not in json.dumps(spec["data"])

    # a dataset from another catalogue: a plain warning and a call to action, not an error
    other = inter.assign(item_id="x" + inter["item_id"])
    save_dataset(from_frames(other, name="other"), "other")
    at.session_state["dataset_name"] = "other"
    at.switch_page(RECS)
    at.run()
    assert not at.exception and not at.error
    assert any("another catalogue" in w.value for w in at.warning)


def test_a_threshold_saved_with_the_model_is_the_recommendations_default(home):
    """Issue 14.4: "Save this threshold with the model" makes it the list's default threshold."""
    from crossrec_core.training.bootstrap import DEMO_MODEL
    from crossrec_core.storage.registry import save_threshold

    at = open_page(RECS)
    first = table(at, "explanation")
    t = float(np.round(first["probability"].median(), 3))
    save_threshold(home / "models" / DEMO_MODEL, t)
    try:
        at = open_page(RECS)
        assert at.session_state["threshold"] == pytest.approx(t)
        shown = table(at, "explanation")
        assert (shown["probability"] >= t - 1e-6).all() and len(shown) < 10
    finally:
        save_threshold(home / "models" / DEMO_MODEL, None)


# -- the model card --------------------------------------------------------------------------------


def card_fields(at: AppTest) -> dict[str, str]:
    card = table(at, "section", "field", "value")
    return dict(zip(card["field"], card["value"]))


@pytest.mark.parametrize("page, key", [(None, "home_card_load"), ("pages/train.py", "train_card_load")])
def test_home_and_train_show_the_active_models_card(home, page, key):
    (home / "models" / "demo-model" / "test_figures.json").unlink(missing_ok=True)  # as trained: not evaluated yet
    at = open_page(page)
    fields = card_fields(at)
    assert fields["Trained on"] == "demo-store" and fields["Saved"].endswith("UTC")
    assert (fields["Sequence encoder"], fields["Vector size"], fields["Reads product titles"]) == ("gru", "16", "no")
    assert (fields["At most this many epochs"], fields["Stops after epochs without progress"]) == ("1", "10")
    assert fields["Best epoch"] == "1 of 1 run" and fields["Training time"].endswith(" s")
    assert float(fields["NDCG@10, sequence model alone (best epoch)"]) >= 0
    assert "not measured yet" in fields["Test figures"]
    assert at.button(key=key).disabled  # its dataset is already the active one
    assert any(c.value == "Its dataset, demo\\-store, is the active one." for c in at.caption)


@pytest.mark.parametrize("page, key", [(None, "home_card_load"), ("pages/train.py", "train_card_load")])
def test_load_its_dataset_makes_the_models_dataset_the_active_one(scratch_home, page, key):
    at = open_page(page, dataset_name="demo-store", model_name="other-model", rec_user="u1")
    assert card_fields(at)["Trained on"] == "other-shop"
    button = at.button(key=key)
    assert not button.disabled and "other\\-shop" in button.label
    button.click().run()
    assert not at.exception, at.exception
    assert (at.session_state["dataset_name"], at.session_state["model_name"]) == ("other-shop", "other-model")
    assert at.session_state["rec_user"] is None
    assert at.button(key=key).disabled
    at.switch_page(RECS).run()  # every page now works on the model's own dataset
    assert not at.exception and at.session_state["dataset_name"] == "other-shop"


def test_a_session_whose_first_run_started_alone_after_the_switch_is_routed_too(home):
    """Two people opening /recommendations at once on a fresh server (bench/load.py found it): the second
    session's first run starts in the legacy pages/ mode, but the pages package is already imported (its
    one-time switch already ran for the first session). The page must still reroute through app.py."""
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        "from streamlit.runtime.pages_manager import PagesManager\n"
        "import pages\n"  # imported by the first session: the import-time switch will not run again
        "at = AppTest.from_file(sys.argv[1], default_timeout=120)\n"
        "PagesManager.uses_pages_directory = True\n"  # this session's run began before the switch
        "at.switch_page('pages/recommendations.py')\n"
        "at.run()\n"
        "print(json.dumps({'sidebar': [s.key for s in at.sidebar.selectbox], 'info': [i.value for i in at.info],"
        " 'exception': [str(e.value) for e in at.exception]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, APP], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, CROSSREC_HOME=str(home)), cwd=Path(APP).parent)
    assert out.returncode == 0, out.stderr[-3000:]
    shown = json.loads(out.stdout.strip().splitlines()[-1])
    assert shown["exception"] == []
    assert shown["sidebar"] == ["_sb_dataset", "_sb_model"]
    assert not any("No dataset yet" in i for i in shown["info"])


def test_two_sessions_on_one_shopper_never_see_each_others_filters_or_shopper(home):
    """Sessions share the Recommender and its per-history cache: one session's filters and what-if edits on a
    shopper must leave another session's list of the same shopper as it was, and each heading names its own."""
    from crossrec_core.storage.datasets import load_dataset

    ds = load_dataset("demo-store")
    u1, u2 = str(ds.user_ids[3]), str(ds.user_ids[4])
    a, b, c = open_page(RECS, rec_user=u1), open_page(RECS, rec_user=u1), open_page(RECS, rec_user=u2)
    before = table(b, "explanation")[["item_id", "probability"]]
    excluded = str(before["item_id"].iloc[0])
    a.toggle(key="_cross_w").set_value(True).run()
    a.multiselect(key="_excluded_w").set_value([str(table(b, "explanation")["category"].iloc[0])]).run()
    a.multiselect(key="_whatif_add_w").set_value([excluded]).run()
    assert not a.exception and excluded not in set(table(a, "explanation")["item_id"])
    b.run()
    pd.testing.assert_frame_equal(table(b, "explanation")[["item_id", "probability"]], before)
    for at, user in ((a, u1), (b, u1), (c.run(), u2)):
        assert next(h.value for h in at.subheader if h.value.startswith("Top")).endswith(user)
        assert at.session_state["rec_user"] == user
    assert b.session_state["whatif_add"] == [] and not b.session_state["cross_only"]


def test_train_page_makes_a_compact_copy_and_never_replaces_a_model(demo_home, empty_home):
    """"Make a compact copy" writes `crossrec compress`'s copy under a new name; the copy is not offered again, and
    a name that is taken is refused with a sentence, the model under it untouched."""
    shutil.copytree(demo_home / "models" / "demo-model", empty_home / "models" / "demo-model")
    shutil.copytree(demo_home / "models" / "demo-model", empty_home / "models" / "other")
    at = open_page("pages/train.py")
    assert at.text_input(key="train_compact_name").value == "demo-model-int8"
    at.selectbox(key="train_compact_src").set_value("other").run()  # the suggested name follows the chosen model
    assert at.text_input(key="train_compact_name").value == "other-int8"
    at.selectbox(key="train_compact_src").set_value("demo-model").run()
    at.text_input(key="train_compact_name").set_value("small")
    at.button(key="train_compact").click().run()
    assert not at.exception
    record = json.loads((empty_home / "models" / "small" / "compression.json").read_text())
    assert record["source"] == "demo-model" and record["int8_tables"] and record["int8_layers"]
    assert [s.value for s in at.success if "Saved 'small'" in s.value]
    assert table(at, "weights")[["model", "weights"]].values.tolist() == [["demo-model", "float32"], ["other", "float32"], ["small", "int8"]]
    assert at.selectbox(key="train_compact_src").options == ["demo-model", "other"]  # the copy is not compressed again
    before = (empty_home / "models" / "small" / "model.safetensors").read_bytes()
    at.text_input(key="train_compact_name").set_value("small")
    at.button(key="train_compact").click().run()
    assert [e.value for e in at.error if "already exists" in e.value]
    assert (empty_home / "models" / "small" / "model.safetensors").read_bytes() == before
