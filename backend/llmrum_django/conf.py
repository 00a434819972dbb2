"""The helper's Django settings, read and checked once when the middleware starts.

Each option of llmrum_backend.options is the setting ``LLMRUM_`` + its name in capitals
(``LLMRUM_CORS_ALLOWED_ORIGINS``, …, ``LLMRUM_SERVER_TIMING``). A bad value raises
``ImproperlyConfigured`` at start-up, naming the setting.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from llmrum_backend.options import DEFAULTS, HelperOptions, OptionError


def setting_name(option: str) -> str:
    return f"LLMRUM_{option.upper()}"


def load() -> HelperOptions:
    values = {
        option: getattr(settings, setting_name(option))
        for option in DEFAULTS
        if hasattr(settings, setting_name(option))
    }
    try:
        return HelperOptions.build(values, setting_name)
    except OptionError as error:
        raise ImproperlyConfigured(str(error)) from None
