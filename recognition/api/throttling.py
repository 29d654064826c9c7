"""The upload throttle, failing open when its cache (Redis) cannot be reached.

DRF's ``ScopedRateThrottle`` counts in Django's cache; with Redis down the count raises and every
upload answered 500. Counting is a courtesy, not a safety boundary (sizes, durations, archive members
and label rows are capped by the services whatever the cache says, and ``/predict``'s per-user
concurrency cap needs the broker anyway), so a request the throttle cannot count goes on.
"""
import logging

from rest_framework.throttling import ScopedRateThrottle

from recognition.broker import broker_errors

logger = logging.getLogger(__name__)


class UploadThrottle(ScopedRateThrottle):
    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except broker_errors() as exc:
            logger.warning("upload throttle skipped: its cache cannot be reached (%s)", exc)
            return True
