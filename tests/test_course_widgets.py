"""minillm.course.interact, the chapters' widget: executed headlessly, a notebook stores the
figure and text drawn with the default values as ordinary outputs (not a widget repr), and a
change of a control redraws them in place."""

import base64

import nbformat
import pytest
from nbclient import NotebookClient

pytest.importorskip("ipywidgets")

SOURCE = '''%matplotlib inline
import matplotlib.pyplot as plt
import ipywidgets as widgets
from minillm.course import interact

def draw(a=1, label="x", show=True):
    print(f"a = {a}, label = {label}")
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, a])
    ax.set_title(f"a = {a}")
    if show:
        plt.show()

ui = interact(draw, a=widgets.IntSlider(value=2, min=0, max=5), label=widgets.fixed("y"),
              show=SHOW)'''


def _run(cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return nb


def _bundles(cell):
    return [o["data"] for o in cell.outputs if o["output_type"] in ("display_data",
                                                                      "execute_result")]


@pytest.mark.parametrize("show", [True, False])
def test_headless_run_stores_the_default_figure_and_text_not_a_repr(show):
    nb = _run([SOURCE.replace("SHOW", str(show))])
    bundles = _bundles(nb.cells[0])
    controls, text, figure = bundles
    assert "application/vnd.jupyter.widget-view+json" in controls
    assert "run this cell" in controls["text/plain"]       # what a viewer without state sees
    assert "IntSlider" not in controls["text/plain"]
    assert text["text/plain"] == "a = 2, label = y\n"       # the constant went through
    assert base64.b64decode(figure["image/png"])[:4] == b"\x89PNG"
    assert not any(o["output_type"] == "error" for o in nb.cells[0].outputs)


def test_moving_a_control_redraws_the_cells_outputs_in_place():
    nb = _run([SOURCE.replace("SHOW", "True"),
               'before = ui["controls"]["a"].description\nui["controls"]["a"].value = 5'])
    first = _bundles(nb.cells[0])
    assert first[1]["text/plain"] == "a = 5, label = y\n"   # updated through its display id
    assert len(nb.cells[1].outputs) == 0                    # nothing new appeared below
    nb_default = _run([SOURCE.replace("SHOW", "True")])
    assert first[2]["image/png"] != _bundles(nb_default.cells[0])[2]["image/png"]


def test_controls_get_labels_and_wide_tracks_and_update_on_release():
    nb = _run([SOURCE.replace("SHOW", "True") + '''
w = ui["controls"]["a"]
print(w.description, w.layout.width, w.style.description_width, w.continuous_update)'''])
    stream = "".join(o.get("text", "") for o in nb.cells[0].outputs if o["output_type"] == "stream")
    assert stream.strip().splitlines()[-1] == "a 70% initial False"
