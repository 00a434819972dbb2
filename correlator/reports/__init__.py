"""Server-rendered report pages under /reports/ (DESIGN.md §7): overview, traces and
their waterfall, sessions, propagation health."""
