"""OTLP/HTTP traces (DESIGN.md §5): the wire (bodies and Status answers), from a
request to span rows, and their bulk write."""
