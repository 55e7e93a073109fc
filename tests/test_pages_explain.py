"""Issue 11's explanations and links through AppTest, on the session's really trained run: the
"why" panel on Predict and Browse (Grad-CAM for any class, opacity, occlusion, feature maps), the
clickable confusion grid and per-class table on Evaluate, and Browse's filters in the URL."""
from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from cifar_core.data import CLASS_NAMES, make_synthetic
from cifar_ui import browse_link
from test_pages import DASHBOARD, RUN_TIMEOUT, matching, open_page, png_bytes, raised, texts, widget

WHY = "Why? Grad-CAM, occlusion and feature maps"


def captions(at: AppTest) -> list[str]:
    return [str(i.proto.imgs[0].caption) for i in at.image if i.proto.imgs]


def test_predict_explains_an_upload_for_any_class(with_run):
    at = open_page("pages/predict.py")
    at.file_uploader[0].set_value([("cat.png", png_bytes(make_synthetic(10, 10, seed=3).x_test[0]), "image/png")]).run()
    assert not at.exception, raised(at)
    assert len(at.image) == 3 and len(at.toggle) == 1  # the panel costs nothing until asked for

    widget(at.toggle, WHY).set_value(True).run()
    assert not at.exception, raised(at)
    explain_class = widget(at.selectbox, "Explain class")
    predicted = explain_class.value
    assert "predicted" in explain_class.format_func(predicted)
    assert [t.label for t in at.tabs] == ["Grad-CAM", "Occlusion", "Feature maps"]
    shown = captions(at)
    assert f"Grad-CAM for {CLASS_NAMES[predicted]} (predicted)" in shown
    assert f"Occlusion for {CLASS_NAMES[predicted]}" in shown
    body = texts(at.caption)
    assert "**Grad-CAM**" in body and "**Occlusion**" in body and "**Feature maps**" in body
    assert "block3_conv2" in body and "logit" in body  # the assignment's last conv, pre-softmax score

    other = (predicted + 1) % len(CLASS_NAMES)
    explain_class.set_value(other).run()
    widget(at.slider, "Map opacity").set_value(0.9).run()
    assert not at.exception, raised(at)
    shown = captions(at)
    assert f"Grad-CAM for {CLASS_NAMES[predicted]} (predicted)" in shown  # "why dog and not cat": both
    assert f"Grad-CAM for {CLASS_NAMES[other]}" in shown and f"Occlusion for {CLASS_NAMES[other]}" in shown

    layer = widget(at.selectbox, "Layer")
    assert layer.options[:2] == ["block1_conv1", "block1_conv2"] and len(layer.options) == 4
    layer.set_value("block1_conv2").run()
    assert not at.exception, raised(at)
    assert any(c.startswith("32 channels of block1_conv2, 32×32") for c in captions(at)), captions(at)


def test_browse_inspector_explains_the_test_image(with_run):
    at = open_page("pages/browse.py")
    inspect = [b for b in at.button if (b.key or "").startswith("inspect-")][3]  # the grid's fourth image
    index = inspect.key.removeprefix("inspect-")
    inspect.click().run()
    widget(at.toggle, "Why?").set_value(True).run()
    assert not at.exception, raised(at)
    assert any(s.value.startswith(f"Why test image #{index} is ") for s in at.subheader)
    explain_class = widget(at.selectbox, "Explain class")
    assert "predicted" in explain_class.format_func(explain_class.value)
    assert any("true" in explain_class.format_func(k) for k in range(len(CLASS_NAMES)))
    assert any(c.startswith("Grad-CAM for ") for c in captions(at))
    assert at.query_params.get("image") == index  # the inspected image is part of the shareable view


def test_evaluate_draws_a_clickable_confusion_grid_and_per_class_table(with_run):
    at = open_page("pages/evaluate.py")
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    grid = next(c for c in charts if c["layout"]["title"]["text"] == "Confusion matrix")
    trace = grid["data"][0]
    assert trace["type"] == "scatter" and trace["marker"]["symbol"] == "square" and len(trace["x"]) == 100
    confusion = next(c for c in at.get("plotly_chart") if c.proto.id and "evaluate_confusion" in c.proto.id)
    assert list(confusion.proto.selection_mode)  # on_select is on: a click reruns with the cell
    assert "Click a cell to browse its test images." in texts(at.caption)
    assert list(at.dataframe[0].value["class"]) == list(CLASS_NAMES)
    assert "Select a class's row to browse its mistakes." in " ".join(texts(at.caption).split("\n"))


def browse_with(with_run: str, **params) -> AppTest:
    at = AppTest.from_file(str(DASHBOARD), default_timeout=RUN_TIMEOUT).run()
    at.query_params = {"run": with_run, **params}
    at.switch_page("pages/browse.py").run()
    assert not at.exception, raised(at)
    return at


def test_a_browse_link_opens_browse_filtered_and_the_filters_stay_in_the_url(with_run):
    at = browse_with(with_run, true="cat", predicted="dog", show="all", order="index")
    assert widget(at.selectbox, "True class").value == CLASS_NAMES.index("cat")
    assert widget(at.selectbox, "Predicted class").value == CLASS_NAMES.index("dog")
    assert widget(at.selectbox, "Order").value == "index"
    assert all(m.value.startswith("cat →") and "**dog**" in m.value for m in at.markdown if "→" in m.value)
    assert at.query_params == {"run": with_run, "true": "cat", "predicted": "dog", "order": "index"}

    widget(at.selectbox, "Predicted class").set_value(None).run()
    widget(at.radio, "Show").set_value("wrong").run()
    assert at.query_params == {"run": with_run, "true": "cat", "show": "wrong", "order": "index"}
    assert all(m.value.startswith("cat →") and ":red[" in m.value for m in at.markdown if "→" in m.value)
    assert not at.warning


def test_a_browse_link_with_unknown_values_says_what_it_ignored(with_run):
    at = browse_with(with_run, true="unicorn", show="sideways")
    assert "true='unicorn' is not a class name" in texts(at.warning)
    assert "show='sideways'" in texts(at.warning)
    assert widget(at.selectbox, "True class").value is None
    assert matching(at) == 200  # every test image: the bad filters were dropped, not guessed


def test_browse_params_leave_defaults_out_and_read_back():
    params = browse_link.browse_params("r1", 3, None, "wrong")
    assert params == {"run": "r1", "true": "cat", "show": "wrong"}
    values, problems = browse_link.parse(params)
    assert problems == [] and values[browse_link.TRUE_KEY] == 3 and values[browse_link.PREDICTED_KEY] is None
    assert values[browse_link.SHOW_KEY] == "wrong" and values[browse_link.ORDER_KEY] == "worst"


def test_a_second_link_in_the_same_session_replaces_the_filters(with_run):
    """Each visit to Browse starts from its URL: another page ran in between, so Streamlit dropped the
    filter widgets' state, and the new link's filters win over the old choices."""
    at = browse_with(with_run, true="cat", predicted="dog")
    widget(at.radio, "Show").set_value("wrong").run()
    at.switch_page("pages/evaluate.py").run()
    assert not at.exception, raised(at)
    at.query_params = {"run": with_run, "true": "ship"}
    at.switch_page("pages/browse.py").run()
    assert not at.exception, raised(at)
    assert widget(at.selectbox, "True class").value == CLASS_NAMES.index("ship")
    assert widget(at.selectbox, "Predicted class").value is None and widget(at.radio, "Show").value == "all"
    assert at.query_params == {"run": with_run, "true": "ship"}
