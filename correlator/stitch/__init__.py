"""Stitching: turning the raw rows of a trace into one stitched trace and its turn
(DESIGN.md §6).

- ``rules``: the pure stitch, plain functions of one trace's rows (clock skew, span
  roles' consequences, turn metrics, propagation causes); no database, no clock.
- ``load``: a batch's raw rows read as plain values (spans, turn events, clock samples).
- ``store``: a stitched batch written in the caller's transaction.
- ``sweep``: claiming dirty traces in batches, stitching, writing, finalizing.
- ``invariants``: rules of cause and effect every stored trace must keep (§10.4).
"""
