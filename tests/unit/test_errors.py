"""The error catalogue: every code has both languages, and the JSON shape is the contract."""

from __future__ import annotations

import pytest

from shared.contracts.errors import CATALOGUE, ApiError, error_body, prefers_japanese


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_every_code_renders_in_both_languages(code: str) -> None:
    for lang in ("en", "ja"):
        body = error_body(code, "cid-1", lang, reason="r", path="/p", method="GET", allowed="POST",
                          limit=1, dependency="tables")
        error = body["error"]
        assert set(error) == {"code", "message", "remedy", "correlationId"}
        assert error["code"] == code and error["correlationId"] == "cid-1"
        assert error["message"] and error["remedy"]
        assert "{" not in error["message"] + error["remedy"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [("ja", True), ("ja-JP,en;q=0.5", True), ("en-US,ja;q=0.9", False), ("en;q=0.2, ja;q=0.8", True),
     (None, False), ("", False), ("fr", False), ("ja;q=abc, en", False)],
)
def test_language_choice(header: str | None, expected: bool) -> None:
    assert prefers_japanese(header) is expected


def test_japanese_text_is_used() -> None:
    body = error_body("InternalError", "abc", "ja")
    assert "abc" in body["error"]["remedy"] and "管理者" in body["error"]["remedy"]


def test_unknown_code_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        ApiError("NoSuchCode")


def test_missing_detail_does_not_crash() -> None:
    assert "?" in error_body("InvalidRequest", "c")["error"]["message"]
