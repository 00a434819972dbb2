"""The admin keeps rules and shows events; a rule's figure and recipients are checked."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from correlator.alerts.models import AlertRule
from tests import factories

pytestmark = pytest.mark.django_db


def test_the_admin_adds_a_rule_and_refuses_a_figure_the_answer_lacks(client):
    app = factories.make_app().application
    client.force_login(User.objects.create_superuser("root", password="pw"))
    form = {"application": app.pk, "name": "errors", "figure": "rates.error_rate",
            "operator": ">", "threshold": "0.05", "window_minutes": "5", "min_turns": "20",
            "webhook_url": "", "email_recipients": '["oncall@example.com"]', "enabled": "on"}  # fmt: skip
    bad = client.post("/admin/alerts/alertrule/add/", {**form, "figure": "rates.eror_rate"})
    assert bad.status_code == 200 and b"is no figure of the metrics answer" in bad.content
    bad = client.post("/admin/alerts/alertrule/add/", {**form, "email_recipients": '["x"]'})
    assert bad.status_code == 200 and b"is no e-mail address" in bad.content
    assert not AlertRule.objects.exists()
    added = client.post("/admin/alerts/alertrule/add/", form)
    assert added.status_code == 302
    assert AlertRule.objects.get().figure == "rates.error_rate"
    for page in ("/admin/alerts/alertrule/", "/admin/alerts/alertevent/"):
        assert client.get(page).status_code == 200
