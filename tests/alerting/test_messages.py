"""What an alert says: credentials scrubbed from any text it quotes."""

from __future__ import annotations

from marketbars.alerting import messages


def test_scrub_masks_the_usual_credential_shapes() -> None:
    text = (
        "https://user:hunter2@example.com/x password=hunter3 token: abc.def "
        "Authorization: Bearer eyJhbGciOi.xyz aws_secret_access_key=AKIAXYZ"
    )
    scrubbed = messages.scrub(text)
    for secret in ("hunter2", "hunter3", "abc.def", "eyJhbGciOi.xyz", "AKIAXYZ"):
        assert secret not in scrubbed
    assert "https://***:***@example.com/x" in scrubbed
