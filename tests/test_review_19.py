"""Review of issue 19 items 5–8 (honest pay, controls, display check, texts), probed black-box as
a crowd worker scripting their way to the paying code and as a researcher configuring a study."""

from __future__ import annotations

from tests.test_online_honesty import (
    PROLIFIC_ID,
    study,
)
from tests.test_online_honesty import clock as clock  # noqa: F401 (the app's clock, a fixture)


def test_an_id_pattern_is_not_bypassed_by_another_platforms_parameters(tmp_path, clock):
    """A study pinned to Prolific ids: a script that failed the checks must not get a second,
    paying sitting by entering with MTurk's or a panel's parameter names (any string, or its own
    Prolific id in the other case, which no pattern then checks)."""
    app = study(tmp_path, ONLINE_ID_PATTERNS={"prolific": r"[0-9a-f]{24}"})
    client = app.test_client()
    for link in (
        f"/online/start?participant={PROLIFIC_ID.upper()}&study=S&session=X",
        "/online/start?participant=anything&study=S&session=X",
        "/online/start?workerId=ANYTHING&hitId=S&assignmentId=X",
    ):
        refused = client.get(link)
        assert refused.status_code == 400, link
        assert "recruitment platform" in refused.get_data(as_text=True)
    assert client.get(f"/online/start?PROLIFIC_PID={PROLIFIC_ID}&STUDY_ID=S").status_code == 302
