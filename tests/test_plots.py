"""Figures a reader must be able to read: the Pareto plot's log axes carry numbers even when the objectives
span less than a decade (the usual case for a short study)."""

import numpy as np

from qallegro.plots import pareto_plot


def _labels(axis):
    return [t.get_text() for t in axis.get_majorticklabels() + axis.get_minorticklabels() if t.get_text()]


def test_pareto_axes_are_labelled_within_a_decade_and_across_decades(tmp_path):
    narrow = np.array([[62.0, 0.9], [90.0, 0.7], [45.0, 0.35], [70.0, 0.3]])  # no power of ten, no 2x or 5x on x
    fig = pareto_plot(narrow, np.array([0, 0, 1, 1], bool), str(tmp_path / "narrow.png"), title="t " * 60)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert len(_labels(ax.xaxis)) >= 3 and len(_labels(ax.yaxis)) >= 3, (_labels(ax.xaxis), _labels(ax.yaxis))
    assert "\n" in ax.get_title()  # a long title is wrapped, not cut off
    wide = np.array([[5.0, 0.1], [500.0, 20.0], [50.0, 2.0]])
    fig = pareto_plot(wide, np.array([1, 0, 1], bool), str(tmp_path / "wide.png"))
    fig.canvas.draw()
    x = _labels(fig.axes[0].xaxis)
    assert {"10", "100"} <= set(x) and "30" not in x  # decades plus 2x and 5x only: no crowding
    assert (tmp_path / "narrow.png").stat().st_size > 0 and (tmp_path / "wide.png").stat().st_size > 0
