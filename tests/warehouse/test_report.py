"""`recsys report` renders a self-contained HTML file with every section and chart."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from batch.publish.warehouse_build import WarehouseInputs, build
from batch.report.build import NO_DRIFT, NO_FEEDBACK, NO_TRAFFIC, SECTIONS, write_report
from batch.report.experiments_section import NO_EXPERIMENTS
from shared.warehouse import analyst_warehouse_path, warehouse_path
from tests.warehouse.conftest import KEY, inputs


class _Parsed(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.h2: list[str] = []
        self._in_h2 = False
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag in ("script", "link") or (tag == "img" and not (values.get("src") or "")
                                          .startswith("data:")):  # fmt: skip
            self.external.append(tag)
        self._in_h2 = tag == "h2"

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.h2.append(data.strip())
            self._in_h2 = False


def parse(path: Path) -> _Parsed:
    parsed = _Parsed()
    parsed.feed(path.read_text())
    return parsed


def test_report_has_every_section_and_chart(warehouse_art: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    cli = [sys.executable, "-m", "shared.cli", "report", "--artifacts", str(warehouse_art),
           "--out", str(out)]  # fmt: skip
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and "No such command" in done.stderr:
        write_report(warehouse_art, out)  # entry point not installed yet: same code path
    else:
        assert done.returncode == 0, done.stderr
    parsed = parse(out)
    assert parsed.h2 == list(SECTIONS)
    # metrics over runs, drift vs threshold, freshness, source mix, Lorenz curve,
    # popularity bias, latency, fallback/hour
    assert len(parsed.images) == 8
    assert all(src.startswith("data:image/png;base64,") and len(src) > 1000
               for src in parsed.images)  # fmt: skip
    assert parsed.external == []
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", out.read_text())
    assert NO_TRAFFIC not in text
    assert not re.search(r"\bu[1-5]\b|ghost", text)  # pseudonyms only


def test_report_without_served_traffic(tmp_path: Path) -> None:
    base = inputs(tmp_path / "unused")
    build(WarehouseInputs(**{**base.__dict__, "served": None}), warehouse_path(tmp_path),
          analyst_warehouse_path(tmp_path), KEY)  # fmt: skip
    parsed = parse(write_report(tmp_path, tmp_path / "r.html"))
    assert parsed.h2 == list(SECTIONS)
    assert len(parsed.images) == 6
    assert NO_TRAFFIC in (tmp_path / "r.html").read_text()


def test_online_outcomes_without_feedback_events(warehouse_art: Path, tmp_path: Path) -> None:
    text = write_report(warehouse_art, tmp_path / "r.html").read_text()
    assert "Online outcomes" in SECTIONS
    assert NO_FEEDBACK in text
    assert NO_EXPERIMENTS in text  # the section says how to start, instead of an empty table


def test_online_outcomes_with_feedback_events(tmp_path: Path) -> None:
    from tests.warehouse import feedback_fixture as fx

    base = inputs(tmp_path / "unused")
    fresh = WarehouseInputs(**{**base.__dict__, "served": fx.write_served(tmp_path),
                               "events": fx.write_events(tmp_path)})  # fmt: skip
    build(fresh, warehouse_path(tmp_path), analyst_warehouse_path(tmp_path), KEY)
    out = write_report(tmp_path, tmp_path / "r.html")
    parsed = parse(out)
    assert parsed.h2 == list(SECTIONS)
    # 8 as before + CTR by position + CTR and play rate per day by bundle
    assert len(parsed.images) == 11
    assert 'alt="CTR by position"' in out.read_text()
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", out.read_text())
    assert NO_FEEDBACK not in text
    assert "14 feedback events, 11 attributed to one of 11 served items" in text
    # The served_by table (rerank: 7 exposures, CTR 0.5714) and the source table.
    assert "<td>rerank</td><td>7</td><td>4</td><td>3</td><td>1</td><td>1</td><td>0.5714</td>" \
        in text
    assert "<td>untagged</td><td>2</td><td>2</td><td>1</td>" in text
    assert not re.search(r"\bu[1-5]\b|ghost", text)  # pseudonyms only


def _section(text: str, title: str) -> str:
    """The HTML between the section's <h2> and the next one, charts' base64 removed."""
    body = text.split(f"<h2>{title}</h2>", 1)[1].split("<h2>", 1)[0]
    return re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,", body)


def test_monitoring_section_has_drift_freshness_and_changes(warehouse_art: Path,
                                                             tmp_path: Path) -> None:  # fmt: skip
    assert SECTIONS[2] == "Input drift, freshness and changes"
    text = write_report(warehouse_art, tmp_path / "r.html").read_text()
    body = _section(text, SECTIONS[2])
    assert 'alt="drift values vs threshold"' in body and 'alt="freshness per run"' in body
    assert "2 input drift check(s) over 4 run(s) (published or stopped); 2 breach(es): " \
           "run-3 item_psi_prev (warn), run-4 volume_drop (fail)." in body
    # drift_trend: volume_drop first (1.25x its threshold), 0.145 per run
    assert "<tr><td>volume_drop</td><td>4</td><td>2026-01-04</td><td>run-4</td><td>0.5</td>" \
           "<td>0.4</td><td>1.25</td><td>fail</td><td>fail</td><td>0.1625</td><td>0.5</td>" \
           "<td>1</td><td>2026-01-04</td><td>0.145</td><td></td></tr>" in body
    # run_changes: the stopped run-4 against run-3, drift rows only
    assert "What changed in run <b>run-4</b> against <b>run-3</b>: 4 value(s) differ." in body
    assert "<tr><td>drift</td><td>volume_drop</td><td>0.05</td><td>0.5</td><td>0.45</td>" \
           "<td>9</td></tr>" in body


def test_monitoring_section_without_drift_checks(tmp_path: Path) -> None:
    base = inputs(tmp_path / "unused")
    build(WarehouseInputs(**{**base.__dict__, "drift": base.drift.slice(0, 0),
                             "runs": base.runs.slice(0, 0)}),
          warehouse_path(tmp_path), analyst_warehouse_path(tmp_path), KEY)  # fmt: skip
    text = write_report(tmp_path, tmp_path / "r.html").read_text()
    body = _section(text, SECTIONS[2])
    assert NO_DRIFT in body and "<img" not in body
