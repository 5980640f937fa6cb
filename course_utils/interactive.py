"""Plots to play with: sliders where a Jupyter front-end can show them, a static grid of panels elsewhere
(lessons 02-04 use it for each loss against its parameters)."""
import itertools
import os

import matplotlib.pyplot as plt
import numpy as np

STATIC_ENV = "COURSE_STATIC_PLOTS"  # set by the course runner: its HTML copies can't run sliders


def widgets_available(config) -> bool:
    """Sliders need ipywidgets and a Jupyter kernel with a front-end: not in quick mode (CI, nbval), nor when
    ``COURSE_STATIC_PLOTS=1``."""
    if config.quick or os.environ.get(STATIC_ENV, "").strip().lower() in {"1", "true", "yes"}:
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    return is_notebook_shell(get_ipython())


def is_notebook_shell(shell) -> bool:
    """A Jupyter kernel's shell (JupyterLab, VS Code) or Colab's (``google.colab._shell.Shell``): both draw
    widgets; a terminal IPython does not."""
    names = {f"{cls.__module__}.{cls.__name__}" for cls in type(shell).__mro__}
    return "ipykernel.zmqshell.ZMQInteractiveShell" in names or any(n.startswith("google.colab.") for n in names)


def static_grid(draw, grid: dict, title=None, panel_size=(4.0, 3.0)):
    """``draw(ax, **params)`` once per combination of ``grid``'s values (``{name: [values]}``); the last name
    varies along a row. Returns the Figure."""
    names = list(grid)
    combos = list(itertools.product(*grid.values()))
    ncols = len(grid[names[-1]])
    nrows = len(combos) // ncols
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(panel_size[0] * ncols, panel_size[1] * nrows))
    for ax, values in zip(axes.flat, combos):
        draw(ax, **dict(zip(names, values)))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def slider_values(low: float, high: float, steps: int = 20) -> list:
    """``steps + 1`` evenly spaced values from ``low`` to ``high``, rounded for display."""
    return [round(float(v), 3) for v in np.linspace(low, high, steps + 1)]


def explore(draw, grid: dict, config, sliders=None, title=None):
    """Sliders over ``sliders`` (``{name: [values]}``, default ``grid``) calling ``draw(ax, **params)`` when a front-end
    can show them; otherwise (CI, nbval, HTML copies) the static grid of ``grid``. Returns the widget or the Figure."""
    if not widgets_available(config):
        fig = static_grid(draw, grid, title)
        plt.close(fig)  # shown once, as the cell's value, not a second time as an open figure
        return fig
    import ipywidgets as widgets
    from IPython.display import display

    def redraw(**params):
        fig, ax = plt.subplots(figsize=(6, 3.8))
        draw(ax, **params)
        display(fig)
        plt.close(fig)

    controls = {name: widgets.SelectionSlider(options=values, value=grid[name][len(grid[name]) // 2],
                                              description=name, continuous_update=False)
                for name, values in (sliders or grid).items()}
    return widgets.interactive(redraw, **controls)
