"""One module per report page, each building what its template shows (values already
formatted) from selectors and ``analytics.figures``: ``overview``, ``traces`` (the
list), ``trace`` (the waterfall), ``session``, ``propagation``."""
