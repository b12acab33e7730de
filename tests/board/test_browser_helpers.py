"""The browser tests' polling helper (no browser needed)."""

from __future__ import annotations

import pytest
from selenium.common.exceptions import StaleElementReferenceException

from tests.board.browser import wait_for


def test_wait_for_asks_again_when_the_page_re_rendered_an_element_it_was_reading() -> None:
    answers = iter([StaleElementReferenceException("re-rendered"), [], ["row"]])

    def predicate():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_for(predicate, timeout_s=5, interval_s=0) == ["row"]


def test_wait_for_gives_up_with_an_assertion_naming_the_predicate() -> None:
    def never():
        """the table to show 9 rows"""
        return []

    with pytest.raises(AssertionError, match="the table to show 9 rows"):
        wait_for(never, timeout_s=0.05, interval_s=0.01)


def test_wait_for_lets_other_errors_through() -> None:
    def broken():
        raise ValueError("a bug in the test")

    with pytest.raises(ValueError, match="a bug in the test"):
        wait_for(broken, timeout_s=5, interval_s=0)
