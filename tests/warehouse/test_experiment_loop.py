"""An experiment from declaration to report: the real app serves 200 users under a 50/50
experiment, their clicks are posted to /v1/events, publish's warehouse rebuild loads the
served log's assignments, and `recsys experiment report` (the real CLI) measures each arm
from the warehouse with the numbers the traffic had."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from batch.publish.warehouse_build import rebuild
from shared import experiments as exp
from tests.conftest import use_development_key
from tests.online.bundle_factory import build_bundle
from tests.online.conftest import make_app, recommend

N_USERS = 200


def test_a_declared_experiment_is_served_logged_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_development_key(monkeypatch)
    art = tmp_path / "art"
    build_bundle(art, "run-a", n_users=N_USERS, n_items=300)
    exp.write(art, exp.ExperimentsFile.model_validate({"experiments": [{
        "name": "scoring", "layer": "ranking", "salt": "scoring-1", "status": "running",
        "arms": [{"name": "control", "share": 0.5, "treatment": {}},
                 {"name": "precomputed", "share": 0.5, "treatment": {"scorer": "none"}}]}]}))

    app = make_app(art, max_content_length=256 * 1024)
    app.extensions["recsys"].store.ensure_started()
    client = app.test_client()
    clicks = {"control": 0, "precomputed": 0}
    users = {"control": 0, "precomputed": 0}
    for n in range(N_USERS):
        user = f"u{n}"
        data = recommend(client, user_id=user, k=10)
        arm = data["arm"]
        users[arm] += 1
        # Control users click their first item one time in two, the others one in four:
        # a real difference the report has to find in the direction it has.
        clicked = n % 2 == 0 if arm == "control" else n % 4 == 0
        events = [{"event_id": f"imp-{n}-{i}", "type": "impression", "user_id": user,
                   "item_id": it["item_id"], "request_id": data["request_id"]}
                  for i, it in enumerate(data["items"])]  # fmt: skip
        if clicked:
            events.append({"event_id": f"click-{n}", "type": "click", "user_id": user,
                           "item_id": data["items"][0]["item_id"], "request_id": data["request_id"]})  # fmt: skip
            clicks[arm] += 1
        assert client.post("/v1/events", json={"events": events}).status_code == 202
    app.extensions["recsys"].close()  # both logs written
    file = exp.load(art)
    assert file is not None
    expected = {"control": 0, "precomputed": 0}
    for n in range(N_USERS):
        expected[exp.assign(file, f"u{n}")[0].arm] += 1
    assert users == expected  # the service assigned exactly as the file says

    rebuild(art, "run-a", tmp_path / "no-clean-interactions")
    out = tmp_path / "report" / "scoring.json"
    done = subprocess.run([sys.executable, "-m", "shared.cli", "experiment", "report", "scoring",
                           "--artifacts", str(art), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert out.with_suffix(".md").exists() and out.with_suffix(".png").exists()
    assert report["shares_declared"] and report["shares"] == {"control": 0.5, "precomputed": 0.5}
    arms = {a["arm"]: a for a in report["arms"]}
    for arm in ("control", "precomputed"):
        assert arms[arm]["users"] == users[arm]
        assert arms[arm]["exposures"] == 10 * users[arm]
        assert arms[arm]["clicks"] == clicks[arm]
        assert arms[arm]["metrics"]["ctr"]["value"] == pytest.approx(clicks[arm] / (10 * users[arm]), abs=1e-6)
    assert report["srm"]["flagged"] is False
    lift = arms["precomputed"]["vs_control"]["ctr"]
    assert lift["lift"] < 0 and lift["p_value"] < 0.05  # half the clicks, 100 users an arm

    # `recsys report` has the same numbers in its Experiments section, with the chart.
    from batch.report.build import write_report

    html = write_report(art, tmp_path / "report.html").read_text()
    section = html[html.index("<h2>Experiments</h2>"):]
    assert 'alt="experiment scoring"' in section
    for arm in ("control", "precomputed"):
        ctr = clicks[arm] / (10 * users[arm])
        assert (f"<tr><td>{arm}</td><td>ctr</td><td>{users[arm]}</td><td>{10 * users[arm]}</td>"
                f"<td>{ctr:.4f}</td>") in section  # fmt: skip
    assert "sample ratio chi-square p = " in section and "(ok)" in section
    assert f"<td>{lift['p_value']:.3g}</td>" in section
