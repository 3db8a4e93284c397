"""The tests. Their shared helpers (tests/support) fail with pytest's detailed assertions."""

import pytest

pytest.register_assert_rewrite("tests.support")
