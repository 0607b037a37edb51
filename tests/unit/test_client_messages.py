"""The client names the API it could not reach without the password of a URL that has one
(basic auth to a proxy in front of the API): its errors end up in the CLI's messages and in
the workers' logs."""

from __future__ import annotations

import pytest

from tuneyard.client import Client, Unreachable


def test_an_unreachable_api_is_named_without_its_password() -> None:
    # Nothing listens on port 1: the connection is refused.
    with Client("http://ops:s3cret@127.0.0.1:1", token="t", retries=0, timeout=2) as c:
        assert "s3cret" not in repr(c)
        with pytest.raises(Unreachable) as err:
            c.get_study(1)
    assert "http://ops:***@127.0.0.1:1" in err.value.detail
    assert "s3cret" not in str(err.value) and "s3cret" not in err.value.detail
