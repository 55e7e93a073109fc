"""CIFAR-10 Lab dashboard helpers shared by the pages: navigation, formatting, cached models and
predictions, test-image views, and the few widgets every page repeats. `fmt` and `gallery` do not
import Streamlit; `nav`, `cache` and `widgets` do."""
