"""Shadow scoring on the real server (`recsys serve`, 2 gunicorn workers): every worker ranks
its sampled requests with the shadow bundle off the response path, writes ART/shadow_log
at its clean stop, and the warehouse build loads the log into `shadow`."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from batch.publish.warehouse_build import rebuild
from shared import canned_queries
from shared import experiments as exp
from shared.parquet_log import part_files
from shared.service_process import running_service
from shared.shadow_log import log_dir
from shared.warehouse import connect_read_only, run_query
from tests.conftest import use_development_key
from tests.online.bundle_factory import build_bundle

pytestmark = [pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
# The workers import this checkout (gunicorn puts its cwd first on their sys.path).
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
       "RECSYS_BUDGET_MS": "10000", "RECSYS_REQUEST_LOG_ROTATE_SECONDS": "2"}  # fmt: skip
REQUESTS = 60


def scored(base: str) -> float:
    text = requests.get(f"{base}/metrics", timeout=10).text
    found = re.search(r'recsys_shadow_total\{outcome="scored"\} ([\d.e+]+)', text)
    return float(found.group(1)) if found else 0.0


def test_the_shadow_log_is_written_by_every_worker_and_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_development_key(monkeypatch)
    art = tmp_path / "art"
    build_bundle(art, "run-a")
    build_bundle(art, "run-b", seed=7, publish=False)
    exp.write(art, exp.ExperimentsFile.model_validate({"shadow": {"bundle": "run-b",
                                                                  "share": 1.0}}))
    served: dict[str, list[str]] = {}
    with running_service(art, tmp_path / "server.log", workers=2, env=ENV, cwd=REPO,
                         ready_timeout_s=90, stop_timeout_s=30) as service:  # fmt: skip
        base = service.base_url
        for n in range(REQUESTS):  # a fresh connection each: both workers answer
            rid = f"e2e-{n:03d}"
            resp = requests.post(f"{base}/v1/recommendations", timeout=10,
                                 json={"user_id": f"u{n % 39}", "k": 10},
                                 headers={"X-Request-Id": rid})  # fmt: skip
            assert resp.status_code == 200, resp.text
            assert resp.json()["bundle"] == "run-a"  # the shadow never answers
            served[rid] = [it["item_id"] for it in resp.json()["items"]]
        deadline = time.monotonic() + 30
        while scored(base) < REQUESTS:  # the shadows run after the answers
            assert time.monotonic() < deadline, scored(base)
            time.sleep(0.2)

    files = part_files(log_dir(art))
    pids = {re.match(r"part-(\d+)-", p.name).group(1) for p in files}  # type: ignore[union-attr]
    assert len(pids) == 2, files  # each worker wrote its own shadow log
    rows = pa.concat_tables([pq.read_table(p) for p in files]).to_pylist()
    assert sorted(r["request_id"] for r in rows) == sorted(served)
    assert {(r["bundle"], r["shadow_bundle"]) for r in rows} == {("run-a", "run-b")}
    assert all(0.0 <= r["jaccard"] < 1.0 and r["n_served"] == 10 for r in rows)

    clean = tmp_path / "clean"
    clean.mkdir()
    pq.write_table(pa.table({"user_id": ["u0"], "item_id": ["m1"], "ts": [1767225600],
                             "event_type": ["view"], "weight": [1.0]}),
                   clean / "part-0.parquet")  # fmt: skip
    rebuild(art, "run-a", clean)
    with connect_read_only(art) as con:
        assert con.execute("SELECT count(*), count(DISTINCT request_id) FROM shadow"
                           ).fetchone() == (REQUESTS, REQUESTS)  # fmt: skip
    q = canned_queries.get("shadow_overlap")
    columns, result = run_query(art, q.sql, q.bind({}))
    (row,) = [dict(zip(columns, r, strict=True)) for r in result]
    assert (row["shadow"], row["requests"]) == ("bundle=run-b,scorer=served", REQUESTS)
    mean = sum(r["jaccard"] for r in rows) / len(rows)
    assert row["mean_jaccard"] == pytest.approx(mean, abs=1e-4)
