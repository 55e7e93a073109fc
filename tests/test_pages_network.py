""""The network" section through AppTest: the Train page's chosen recipe and the Runs page's
selected run (its saved model, the session's really trained run), each a table of layers with
its totals and training-only layers; closed, it builds and loads nothing."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

from cifar_core.charts.network import RECEPTIVE_FIELD_TITLE
from cifar_core.models import ASSIGNMENT_PARAMS
from cifar_ui import network
from test_pages import broken_run, chart_titles, open_page, raised, texts, widget  # noqa: F401 (a fixture)

ASSIGNMENT_DROPOUTS = ["block1_dropout", "block2_dropout", "block3_dropout", "flatten_dropout",
                       "dense1024_dropout", "dense512_dropout"]


def totals(at: AppTest) -> str:
    found = [m.value for m in at.markdown if "parameters**" in m.value]
    assert len(found) == 1, texts(at.markdown)
    return found[0]


def layer_table(at: AppTest):
    tables = [d.value for d in at.dataframe if "layer" in d.value.columns]
    assert len(tables) == 1
    return tables[0]


def open_section(at: AppTest, key: str) -> AppTest:
    """Open the expander as a click would: its state is a widget's (on_change="rerun")."""
    assert network.LABEL in [e.label for e in at.expander]
    assert not [m for m in at.markdown if "parameters**" in m.value], "the closed section rendered its content"
    at.session_state[key] = True
    at.run()
    assert not at.exception, raised(at)
    assert not at.error, texts(at.error)
    return at


def test_train_shows_the_chosen_recipes_network(artifacts):
    at = open_section(open_page("pages/train.py"), "cifar_train_network")
    assert totals(at) == (f"**{ASSIGNMENT_PARAMS:,} parameters** ({ASSIGNMENT_PARAMS:,} trainable, 0 non-trainable) "
                          "· **82.5 M FLOPs** per image")
    table = layer_table(at)
    assert table["layer"].tolist()[:4] == ["rescale", "block1_conv1", "block1_dropout", "block1_conv2"]
    assert table.set_index("layer").loc["block3_conv2", "receptive field"] == 32
    assert table.loc[table["training only"], "layer"].tolist() == ASSIGNMENT_DROPOUTS
    assert "Training only (6)" in texts(at.caption)
    assert "The last convolution, block3_conv2, sees 32 pixels of the 32-pixel image." in texts(at.caption)
    assert RECEPTIVE_FIELD_TITLE in chart_titles(at)

    # another recipe: its own network, with augmentation marked training only
    widget(at.selectbox, "Recipe").set_value("best").run()
    assert not at.exception, raised(at)
    table = layer_table(at)
    assert "whiten" in table["layer"].tolist() and "GlobalMaxPooling2D" in table["type"].tolist()
    assert table.loc[table["training only"], "layer"].tolist() == ["augment_flip", "augment_translate"]
    assert "**2,915,114 parameters**" not in totals(at) and "non-trainable" in totals(at)


def test_runs_shows_the_selected_runs_saved_model(with_run):
    at = open_section(open_page("pages/runs.py"), "runs_network")
    assert totals(at).startswith("**2,915,114 parameters** (2,915,114 trainable, 0 non-trainable)")
    assert "**82.5 M FLOPs** per image" in totals(at)
    assert f"The saved model of run `{with_run}`." in texts(at.caption)
    table = layer_table(at)
    assert table.loc[table["training only"], "layer"].tolist() == ASSIGNMENT_DROPOUTS
    assert table.set_index("layer").loc["block3_pool", ["receptive field", "jump"]].tolist() == [36, 8]
    assert RECEPTIVE_FIELD_TITLE in chart_titles(at)


def test_runs_says_why_a_broken_run_has_no_network(broken_run, with_run):
    at = open_page("pages/runs.py")
    widget(at.selectbox, "Run").set_value(broken_run).run()
    at = open_section(at, "runs_network")
    assert f"run {broken_run} is broken" in texts(at.info)
