import matplotlib.pyplot as plt
import pytest

from course_utils import interactive
from course_utils.session import Config


def draw(ax, a, b):
    ax.set_title(f"{a}-{b}")


def test_static_grid_one_panel_per_combination():
    fig = interactive.static_grid(draw, {"a": [1, 2], "b": [3, 4, 5]})
    assert [ax.get_title() for ax in fig.axes] == ["1-3", "1-4", "1-5", "2-3", "2-4", "2-5"]
    assert fig.axes[0].get_subplotspec().get_gridspec().get_geometry() == (2, 3)
    plt.close(fig)


@pytest.mark.parametrize("quick, env", [(True, ""), (False, "1")])
def test_static_without_a_front_end(monkeypatch, quick, env):
    monkeypatch.setenv(interactive.STATIC_ENV, env)
    config = Config(seed=0, device=None, quick=quick)
    assert not interactive.widgets_available(config)
    fig = interactive.explore(draw, {"a": [1], "b": [2]}, config)
    assert fig.axes[0].get_title() == "1-2"
    plt.close(fig)


def test_plain_python_has_no_front_end(monkeypatch):
    monkeypatch.delenv(interactive.STATIC_ENV, raising=False)
    assert not interactive.widgets_available(Config(seed=0, device=None, quick=False))


def test_sliders_in_a_kernel(monkeypatch):
    """With a Jupyter kernel present, explore returns ipywidgets sliders that redraw on a change."""
    ipywidgets = pytest.importorskip("ipywidgets")
    monkeypatch.delenv(interactive.STATIC_ENV, raising=False)
    monkeypatch.setattr(interactive, "widgets_available", lambda config: True)
    calls = []
    widget = interactive.explore(lambda ax, a: calls.append(a), {"a": [1, 2, 3]}, Config(0, None, False),
                                 sliders={"a": [1, 1.5, 2, 2.5, 3]})
    assert isinstance(widget, ipywidgets.interactive)
    slider = widget.children[0]
    assert slider.options == (1, 1.5, 2, 2.5, 3) and slider.value == 2
    slider.value = 2.5
    assert calls[-1] == 2.5


def test_slider_values():
    assert interactive.slider_values(0, 1, 4) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_jupyter_and_colab_shells_draw_widgets_a_terminal_does_not():
    from ipykernel.zmqshell import ZMQInteractiveShell
    from IPython.terminal.interactiveshell import TerminalInteractiveShell

    colab_shell = type("Shell", (ZMQInteractiveShell,), {"__module__": "google.colab._shell"})
    bare_colab = type("Shell", (), {"__module__": "google.colab._shell"})  # matched by its module alone
    assert interactive.is_notebook_shell(colab_shell.__new__(colab_shell))
    assert interactive.is_notebook_shell(bare_colab())
    assert not interactive.is_notebook_shell(TerminalInteractiveShell.__new__(TerminalInteractiveShell))
    assert not interactive.is_notebook_shell(None)


def test_a_static_grid_is_shown_once():
    """Returned as the cell's value (displayed once), not also left open for the inline back-end to show."""
    before = set(plt.get_fignums())
    fig = interactive.explore(draw, {"a": [1], "b": [2]}, Config(seed=0, device=None, quick=True))
    assert fig.axes and set(plt.get_fignums()) == before
