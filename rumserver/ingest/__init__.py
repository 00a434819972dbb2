"""Ingest: the beacon API, the OTLP receiver and evaluation scores, from the request
to the raw rows and their dirty marks. Imports nothing of the correlator, the demo
or the project's wiring (tests/rumserver/test_layout.py checks it)."""
