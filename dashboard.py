"""CIFAR-10 Lab, the Streamlit entry: page config and navigation; each page lives in pages/.

Run with `streamlit run dashboard.py`. Set CIFAR10_DATA ('keras', 'synthetic' or a path) and
CIFAR_ARTIFACTS_DIR before starting to change the data source and where runs are stored.
"""
import streamlit as st

from cifar_ui import nav, runtime

st.set_page_config(page_title="CIFAR-10 Lab", page_icon=":material/science:", layout="wide")
runtime.keep_keras_session()  # Streamlit would reset Keras under the training thread after each run
runtime.start_runner()  # a served lab trains its queue and the sweeps started here (cifar_core/sweeps/runner.py)
nav.mark_entry_ran()
pages = {p.path: st.Page(p.path, title=p.title, icon=p.icon, default=(p is nav.HOME)) for p in nav.PAGES}
current = st.navigation(list(pages.values()))
target = st.query_params.pop(nav.TARGET_PARAM, None)  # a deep link that arrived before the entry ever ran
if target in pages:
    st.switch_page(pages[target], query_params=st.query_params.to_dict())  # e.g. Browse's filters
current.run()
