"""Names carrying bidi and other format controls (Unicode Cf) are refused with a 422 that
names the field; the joiners that scripts and emoji need are not."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.utils import API, spec

SPEC = spec(epochs=2, pretrained=False)


def test_a_name_with_a_format_control_is_a_422_naming_name(client: TestClient) -> None:
    # RLO, LRI, zero-width space, BOM, soft hyphen, a language tag; a line separator and
    # ESC (refused before) too.
    for bad in ("\u202e", "\u2066", "\u200b", "\ufeff", "\u00ad", "\U000e0001", "\u2028",
                "\x1b"):
        answer = client.post(f"{API}/experiments",
                             json={**SPEC, "name": f"report{bad}gnp.exe"})
        assert answer.status_code == 422, answer.text
        [error] = answer.json()["detail"]
        assert error["loc"] == ["body", "name"] and f"U+{ord(bad):04X}" in error["msg"], bad
    assert client.get(f"{API}/experiments").json()["items"] == []  # nothing stored


def test_joiners_and_ordinary_scripts_stay_allowed(client: TestClient) -> None:
    for name in ("می\u200cخواهم", "👩\u200d🔬 lab", "שלום world", "Łódź 東京"):
        answer = client.post(f"{API}/experiments", json={**SPEC, "name": name})
        assert answer.status_code == 201, answer.text
        assert answer.json()["name"] == name
