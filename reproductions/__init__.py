"""The founding papers' experiments, reproduced on the engine: outside ``conserv_core``,
which they use and which never imports them.

:mod:`reproductions.papers` holds HNN Table 1 and the LNN double pendulum (settings,
protocols, the papers' reported numbers); ``benchmarks/reproduce_hnn.py`` and
``benchmarks/reproduce_lnn.py`` run them, ``tests/test_reproductions.py`` at reduced
size. The presets that offer live-size versions (``conserv_core.presets``) go through
the ordinary trainer and need nothing from here.
"""
