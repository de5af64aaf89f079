"""URLs as pages and logs show them: no password, no token in the user name or a query parameter."""

from __future__ import annotations

import pytest

from controlplane.redaction import redact_url, redact_urls


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:s3cretpw@h:8080/p?a=1", "http://user:***@h:8080/p?a=1"),
        ("http://user:p%40ss%2Fw@h/", "http://user:***@h/"),
        ("http://u:pa@ss@h/", "http://u:***@h/"),
        ("https://ghp_s3cretpw@github.com/", "https://***@github.com/"),
        ("http://h/?token=s3cretpw&a=1", "http://h/?token=[redacted]&a=1"),
        ("http://h/?access_token=s3cretpw", "http://h/?access_token=[redacted]"),
        ("http://h/?API_KEY=s3cretpw", "http://h/?API_KEY=[redacted]"),
        ("http://h/?key=s3cretpw", "http://h/?key=[redacted]"),
        (
            "https://b.blob.core.windows.net/c?sv=2024&sig=s3cretpw",
            "https://b.blob.core.windows.net/c?sv=2024&sig=[redacted]",
        ),
        ("http://h/?X-Amz-Signature=s3cretpw", "http://h/?X-Amz-Signature=[redacted]"),
        ("http://h/cb#access_token=s3cretpw", "http://h/cb#access_token=[redacted]"),
        ("http://h/?monkey=banana&token=", "http://h/?monkey=banana&token="),  # nothing to hide
        ("http://h/health", "http://h/health"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_urls_in_a_sentence_are_redacted_and_the_sentence_kept():
    text = "GET http://a:s3cretpw@h/x?password=s3cretpw, then (https://h2/?code=s3cretpw). done"
    assert redact_urls(text) == "GET http://a:***@h/x?password=[redacted], then (https://h2/?code=[redacted]). done"
