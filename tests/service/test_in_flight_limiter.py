"""InFlightLimiter on its own: exactly `limit` requests at once, the next one a 503 at once."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from service.errors import ApiError
from service.limits import InFlightLimiter


def test_limiter_admits_exactly_the_limit_and_frees_a_slot_on_exit() -> None:
    limiter = InFlightLimiter(2)
    with ExitStack() as held:
        held.enter_context(limiter.slot())
        held.enter_context(limiter.slot())
        assert limiter.active == 2
        with pytest.raises(ApiError) as refused:
            held.enter_context(limiter.slot())
        assert refused.value.status == 503 and refused.value.code == "overloaded"
        assert refused.value.headers == {"Retry-After": "1"}
        assert "MAX_IN_FLIGHT" in refused.value.detail
        assert limiter.active == 2, "a refused request holds no slot"
    assert limiter.active == 0
    with limiter.slot():
        assert limiter.active == 1


def test_a_request_that_fails_still_gives_its_slot_back() -> None:
    limiter = InFlightLimiter(1)
    with pytest.raises(RuntimeError), limiter.slot():
        raise RuntimeError("handler bug")
    assert limiter.active == 0
