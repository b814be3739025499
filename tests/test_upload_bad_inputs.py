"""The bad-input corpus through the studio's upload (Data page, AppTest's real st.file_uploader), and privacy.

For every case: the page renders without an exception, shows the error that names the problem (or the
validation report when the file loads), stays usable (title, uploaders, sidebar still there) and the
workspace is byte-for-byte the same listing afterwards: an upload alone never writes. Saving an upload
with a hostile file name writes only under workspace/datasets/<safe name>.
The CLI path of the same corpus is tests/test_bad_inputs.py (ingestion engineer).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from corpus import UPLOAD_TYPES, Upload, all_uploads

APP = str(Path(__file__).resolve().parent.parent / "app.py")
def listing(root: Path) -> list[tuple[str, int]]:
    """Return (relative path, size) of everything under root (folders with size -1)."""
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> dict[str, Upload]:
    return {u.name: u for u in all_uploads(tmp_path_factory.mktemp("corpus"))}


def _case_names() -> list[str]:
    # names only (the bytes are generated once per module, in the fixture above)
    from corpus import FILE_CASES, upload_only_cases

    return [c.name for c in FILE_CASES if not c.kwargs] + [u.name for u in upload_only_cases()]


@pytest.fixture(scope="module")
def studio_home(tmp_path_factory):
    """A workspace with one saved dataset (so 'unchanged' is checked against real content)."""
    from crossrec_core.data.load import load_log
    from crossrec_core.storage.datasets import save_dataset

    root = tmp_path_factory.mktemp("studio")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CROSSREC_HOME", str(root))
        from corpus import GOOD_LOG

        save_dataset(load_log(GOOD_LOG.encode(), interactions_name="kept.csv"), "kept", root=root)
        yield root


def open_data_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/data.py")
    at.run()
    assert not at.exception, at.exception
    return at


def upload(at: AppTest, case: Upload) -> AppTest:
    at.file_uploader(key="data_log").set_value((case.log[0], case.log[1], "application/octet-stream"))
    if case.items is not None:
        at.file_uploader(key="data_items").set_value((case.items[0], case.items[1], "application/octet-stream"))
    at.run()
    return at


def assert_page_usable(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Data"
    assert {u.key for u in at.file_uploader} == {"data_log", "data_items", "data_vectors"}
    assert at.session_state["dataset_name"] == "kept"  # the active dataset is untouched


@pytest.mark.parametrize("name", _case_names())
def test_upload_case_is_handled_and_workspace_unchanged(name, uploads, studio_home, monkeypatch):
    monkeypatch.setenv("CROSSREC_HOME", str(studio_home))
    case = uploads[name]
    at = open_data_page()
    before = listing(studio_home)
    upload(at, case)
    assert_page_usable(at)
    errors = [e.value for e in at.error]
    if case.error:
        assert len(errors) == 1, errors
        for words in case.error:
            assert words in errors[0], (words, errors[0])
        assert "Traceback" not in errors[0] and "File \"" not in errors[0]
        assert not at.button, "an upload that failed must not offer 'Save dataset'"
    else:
        assert not errors, errors
        heads = [s.value for s in at.subheader]
        assert heads[0] == "Column mapping" and "Validation report" in heads
        assert ("Items table mapping" in heads) == (case.items is not None)
        assert any(b.key == "data_save" for b in at.button)
    assert listing(studio_home) == before



@pytest.mark.parametrize("name", _case_names())
def test_a_bad_file_as_item_vectors_is_a_plain_error_and_saves_nothing(name, uploads, studio_home, monkeypatch):
    """Every corpus file the vectors uploader accepts (csv, parquet, gz), given as the saved dataset's item
    vectors: no exception, at most one plain error, no save button after an error, the workspace unchanged."""
    monkeypatch.setenv("CROSSREC_HOME", str(studio_home))
    file_name, data = uploads[name].log
    if not file_name.lower().endswith((".csv", ".parquet", ".gz")):
        pytest.skip("the vectors uploader does not offer this type")
    at = open_data_page()
    before = listing(studio_home)
    at.file_uploader(key="data_vectors").set_value((file_name, data, "application/octet-stream")).run()
    assert_page_usable(at)
    errors = [e.value for e in at.error]
    assert len(errors) <= 1 and not any("Traceback" in e or 'File "' in e for e in errors), errors
    if errors:
        assert not any(b.key == "data_save_vectors" for b in at.button)
    assert listing(studio_home) == before

def test_corpus_counts(uploads):
    """The upload corpus has at least 30 cases, covers errors and loads, and keeps the hostile names."""
    assert len(uploads) >= 30
    n_err = sum(bool(u.error) for u in uploads.values())
    assert n_err >= 20 and len(uploads) - n_err >= 10
    assert uploads["xlsx_workbook"].renamed and uploads["xlsx_workbook"].log[0] == "book.xlsx.csv"


def test_extension_outside_the_type_list_is_refused_by_the_uploader(studio_home, monkeypatch):
    """A hand-crafted upload with an extension the uploader does not offer never reaches crossrec code."""
    monkeypatch.setenv("CROSSREC_HOME", str(studio_home))
    at = open_data_page()
    assert set(t.lstrip(".") for t in at.file_uploader(key="data_log").allowed_type) == set(UPLOAD_TYPES)
    before = listing(studio_home)
    at.file_uploader(key="data_log").set_value(("book.xlsx", b"PK\x03\x04" + b"\x00" * 100, "application/zip"))
    at.run()
    assert at.exception  # Streamlit itself refuses the file (the browser would not even send it)
    assert "xlsx" not in " ".join(e.value for e in at.exception)  # details redacted (showErrorDetails)
    assert listing(studio_home) == before


def test_page_recovers_after_a_bad_upload(uploads, studio_home, monkeypatch):
    """After an error, replacing the file with a good one shows the report: the session is not stuck."""
    monkeypatch.setenv("CROSSREC_HOME", str(studio_home))
    at = open_data_page()
    upload(at, uploads["random_binary"])
    assert at.error
    upload(at, uploads["whitespace_ids"])
    assert not at.error and not at.exception
    assert any(b.key == "data_save" for b in at.button)


def test_saving_an_upload_with_a_hostile_name_stays_inside_the_workspace(uploads, tmp_path, monkeypatch):
    """'../../../etc/cron.d/evil.csv' and an HTML file name are saved under datasets/<slug>, nothing else."""
    root = tmp_path / "ws"
    monkeypatch.setenv("CROSSREC_HOME", str(root))
    outside_before = listing(tmp_path)
    at = open_data_page()
    upload(at, uploads["traversal_file_name"])
    assert at.text_input(key="data_name").value == "etc-cron.d-evil" or "/" not in at.text_input(key="data_name").value
    at.button(key="data_save").click().run()
    assert not at.exception and not at.error
    saved = [p.name for p in (root / "datasets").iterdir() if p.is_dir()]
    assert saved == [at.text_input(key="data_name").value]
    new = {p for p, _ in listing(tmp_path)} - {p for p, _ in outside_before}
    assert all(p.startswith("ws") for p in new), sorted(new)

    at = open_data_page()
    upload(at, uploads["html_file_name"])
    name = at.text_input(key="data_name").value
    assert "<" not in name and ">" not in name and '"' not in name
    at.button(key="data_save").click().run()
    assert not at.exception and not at.error
    from crossrec_core.storage.datasets import load_dataset

    assert load_dataset(name).n_events == 60


# -- privacy ----------------------------------------------------------------------------------------


def test_pseudonymized_ids_never_reach_the_disk(tmp_path, monkeypatch):
    """With pseudonymize=True the raw user ids appear in no file of the workspace; the salt file is there;
    the same raw id maps to the same pseudonym across two loads."""
    from crossrec_core.data.load import load_log
    from crossrec_core.storage.datasets import load_dataset, save_dataset

    root = tmp_path / "ws"
    monkeypatch.setenv("CROSSREC_HOME", str(root))
    raw_ids = ["alice.smith@example.com", "CUST-0042-BOB", "+49 170 1234567"]
    rows = "".join(f"{raw_ids[k % 3]},i{k % 5},{1_700_000_000 + k}\n" for k in range(30))
    log = ("user_id,item_id,timestamp\n" + rows).encode()
    ds1 = load_log(log, interactions_name="private.csv", pseudonymize=True)
    save_dataset(ds1, "private")
    ds2 = load_log(log, interactions_name="private.csv", pseudonymize=True)
    assert (root / "salt").is_file() and len((root / "salt").read_text().strip()) >= 16
    assert sorted(ds1.user_ids) == sorted(ds2.user_ids)
    assert not set(raw_ids) & set(ds1.user_ids)
    assert sorted(load_dataset("private").user_ids) == sorted(ds1.user_ids)
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            for raw in raw_ids:
                assert raw.encode() not in data, (raw, p)
                assert raw.encode("utf-16-le") not in data, (raw, p)
    # without pseudonymize the same bytes do reach the disk: the check above can fail
    save_dataset(load_log(log, interactions_name="plain.csv"), "plain")
    assert any(raw_ids[0].encode() in p.read_bytes() for p in (root / "datasets" / "plain").iterdir())


def test_data_page_pseudonymise_toggle_keeps_raw_ids_off_the_disk(tmp_path, monkeypatch):
    """The Data page's 'Pseudonymise shopper ids' toggle saves salted hashes, never the raw ids."""
    root = tmp_path / "ws"
    monkeypatch.setenv("CROSSREC_HOME", str(root))
    raw_ids = ["alice.smith@example.com", "CUST-0042-BOB"]
    rows = "".join(f"{raw_ids[k % 2]},i{k % 5},{1_700_000_000 + k}\n" for k in range(20))
    at = open_data_page()
    at.file_uploader(key="data_log").set_value(("shop.csv", ("user_id,item_id,timestamp\n" + rows).encode(), "text/csv"))
    at.run()
    at.toggle(key="data_pseudonymize").set_value(True).run()
    at.button(key="data_save").click().run()
    assert not at.exception and not at.error
    files = [p for p in (root / "datasets").rglob("*") if p.is_file()]
    assert files, "nothing was saved"
    for p in files:
        for raw in raw_ids:
            assert raw.encode() not in p.read_bytes(), (raw, p)
