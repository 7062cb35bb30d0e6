"""Draw a results file's Pareto front and constraint ladder into one HTML page (the same
plots as the dashboard's Sweep card), for the README's picture::

    conserv sweep --system pendulum --methods baseline,penalty,auglag,hnn \
        --lam 0.1,1,10,100,1000 --seeds 0-4 --out docs/sweep-pendulum.csv --yes
    python docs/sweep_picture.py docs/sweep-pendulum.csv /tmp/sweep.html
    ../shared/tools/screenshot /tmp/sweep.html docs/sweep-pendulum.png --wait 4 --size 1400x760
"""

from __future__ import annotations

import sys

import holoviews as hv
import pandas as pd

from app.sweep_view import ladder_plot, pareto_plot


def main(src: str, out: str, quantity: str = "energy") -> None:
    hv.extension("bokeh")
    rows = pd.read_csv(src)
    page = (pareto_plot(rows, quantity) + ladder_plot(rows, quantity)).cols(2)
    hv.save(page.opts(shared_axes=False), out, title="Sweep: pendulum", resources="inline")  # no CDN here


if __name__ == "__main__":
    main(*sys.argv[1:])
