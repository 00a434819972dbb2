"""Session analytics (DESIGN.md §6, §7): the metrics API's and the overview's figures.

- ``figures``: a window's figures, as the API answers them: exact while the window
  holds at most ``LLMRUM_METRICS_EXACT_TURNS`` turns, else from rollups.
- ``exact``: the figures of a set of turns, every turn read (the one definition of
  each figure), and the reads of a window's turns with what those figures need.
- ``rollups``: building per-minute rows of counts and sketches, merged into hours
  and days (marked dirty by the stitch, rebuilt by the sweep).
- ``windows``: reading rollups for a window (and raw turns where they cannot answer).
- ``sketches``: the mergeable histogram and HyperLogLog inside rollup rows.
"""
