"""Alert rules on the metrics answer, evaluated every minute, and their events
(DESIGN.md §10.6 Alerts)."""
