"""Beacons (DESIGN.md §4): the payload schema, parsing a batch into rows, the user
agent, and the one write of a batch."""
