"""crossrec studio: the router. Page config, logo, navigation; every page lives in pages/."""

from pathlib import Path

import streamlit as st

from pages import routed

ASSETS = Path(__file__).resolve().parent / "assets"

# a local file: a ":material/...:" page icon makes the browser fetch its SVG from fonts.gstatic.com
st.set_page_config(page_title="crossrec studio", page_icon=str(ASSETS / "icon.svg"), layout="wide")
st.logo(str(ASSETS / "logo.svg"), icon_image=str(ASSETS / "icon.svg"), size="large")

pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/table_view:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/embedding_map.py", title="Embedding map", icon=":material/scatter_plot:"),
    st.Page("pages/recommendations.py", title="Recommendations", icon=":material/recommend:"),
    st.Page("pages/push.py", title="Push a category", icon=":material/campaign:"),
    st.Page("pages/evaluation.py", title="Evaluation", icon=":material/monitoring:"),
]
pg = st.navigation(pages)
# imported after the navigation is drawn: its imports (jobs, caches) take seconds in a new process
from pages.sidebar import sidebar  # noqa: E402

sidebar()
with routed():
    pg.run()
