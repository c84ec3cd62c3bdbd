"""``touchstream query profiles|attribution|roi``, ``costs load``, ``simulate --costs`` and
``evaluate attribution|nab`` as a person runs them (subprocesses: the embedded engine is one per
process), on a data dir loaded from a simulated run."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from streams.core.attribution import MODELS
from streams.core.roi import parse_cost_feed
from tests.unit.devtools.test_nab_eval import _write
from tests.unit.test_cli import assert_one_line, touchstream

FEED_HEADER = "date,tenant_id,channel,campaign,cost,currency\n"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """simulate (with its cost feed) → process → ClickHouse: an hour at 10 events/s, ending now."""
    root = tmp_path_factory.mktemp("growth")
    start = str(int(time.time() * 1000) - 3_600_000)
    for argv in (("simulate", "--rate", "10", "--duration", "3600", "--seed", "3", "--start-ms", start, "--out",
                  str(root / "feed.jsonl"), "--truth", str(root / "truth.json"), "--costs", str(root / "costs.csv"),
                  "-q"),
                 ("process", str(root / "feed.jsonl"), "--out", str(root / "out"), "--into-clickhouse", "-q")):
        res = touchstream(root, *argv, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
    return root


def json_of(root: Path, *argv: str) -> object:
    res = touchstream(root, *argv)
    assert res.returncode == 0, res.stderr[-3000:]
    return orjson.loads(res.stdout)


def test_simulate_writes_a_cost_feed_that_loads_whole_or_not_at_all(loaded: Path) -> None:
    text = (loaded / "costs.csv").read_text()
    rows = parse_cost_feed(text, "costs.csv")
    assert rows and all(r.channel == "email" for r in rows)  # the newsletter-like campaigns are paid by feed
    bad = loaded / "bad.csv"
    bad.write_text(text + "2026-01-01,acme-shop,fax,x,1.00,EUR\n")
    assert_one_line(touchstream(loaded, "costs", "load", str(bad)), f"{bad}:{len(text.splitlines()) + 1}:", "fax")
    assert_one_line(touchstream(loaded, "costs", "load", str(loaded / "none.csv")), "none.csv", "not found")
    before = json_of(loaded, "query", "roi", "--json")
    assert all(r["cost_micros"] == 0 for r in before if r["campaign"] in {x.campaign for x in rows})  # nothing loaded
    dry = json_of(loaded, "costs", "load", str(loaded / "costs.csv"), "--dry-run")
    assert dry["loaded"] is False and dry["lines"] == len(rows)
    done = json_of(loaded, "costs", "load", str(loaded / "costs.csv"))
    assert done["loaded"] is True and done["rows"] == len(rows)
    assert json_of(loaded, "costs", "load", str(loaded / "costs.csv"))["loaded"]  # again: replaces, not adds
    want: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        want[(r.tenant_id, r.campaign)] += r.cost_micros
    after = {(r["tenant_id"], r["campaign"]): r for r in json_of(loaded, "query", "roi", "--json")}
    for key, micros in want.items():
        assert after[key]["cost_micros"] == micros, key


def test_query_attribution_roi_and_profiles(loaded: Path) -> None:
    attribution = json_of(loaded, "query", "attribution", "--json")
    totals = [r for r in attribution if r["campaign"] == "(total)"]
    assert totals, "the simulated hour should have won deals"
    for total in totals:
        assert len({total[f"{m}_minor"] for m in MODELS}) == 1  # every model credits the whole revenue
        parts = [r for r in attribution if r["tenant_id"] == total["tenant_id"] and r["campaign"] != "(total)"
                 and r["currency"] == total["currency"]]
        for m in MODELS:
            assert sum(r[f"{m}_minor"] for r in parts) == total[f"{m}_minor"]
    revenue = {(t["tenant_id"], t["currency"]): t["linear_minor"] for t in totals}
    for model in ("linear", "position_based"):
        roi = json_of(loaded, "query", "roi", "--model", model, "--json")
        got: dict[tuple[str, str], int] = defaultdict(int)
        for r in roi:
            got[(r["tenant_id"], r["currency"])] += r["revenue_minor"]
            assert r["model"] == model
            if r["cost_micros"]:
                assert r["roi"] == round((r["revenue_minor"] * 10 ** (6 - r["exponent"]) - r["cost_micros"])
                                         / r["cost_micros"], 4)
            if r["campaign"] is not None and r["chain"] is not None:
                assert [s["stage"] for s in r["chain"]][-1] == "deal"
        assert {k: v for k, v in got.items() if v} == revenue  # a tenant with costs and no deal: 0
    text = touchstream(loaded, "query", "roi", "--by", "channel")
    assert text.returncode == 0 and "channel" in text.stdout and "roas" in text.stdout, text.stderr

    profiles = json_of(loaded, "query", "profiles", "--sort", "revenue", "--limit", "3", "--json")
    stages = [r["stage"] for r in profiles["lifecycle"]]
    assert stages[:5] == ["anonymous", "known", "lead", "opportunity", "customer"]
    top = profiles["persons"][0]
    assert top["deals_won"] >= 1 and top["rfm"] is not None  # refreshed for this short-lived engine
    (one,) = json_of(loaded, "query", "profiles", "--person", top["person_id"], "--json")
    assert one["person_id"] == top["person_id"] and one["revenue"] == top["revenue"]
    shown = touchstream(loaded, "query", "profiles", "--person", top["person_id"])
    assert "lifecycle stage" in shown.stdout and top["person_id"] in shown.stdout
    assert_one_line(touchstream(loaded, "query", "profiles", "--person", "p_nobody"), "p_nobody")
    table = touchstream(loaded, "query", "attribution", "--by", "channel")
    assert "(total)" in table.stdout and "first_touch" in table.stdout and "_minor" not in table.stdout


def test_growth_queries_on_a_fresh_data_dir(tmp_path: Path) -> None:
    for what in ("profiles", "attribution", "roi"):
        assert_one_line(touchstream(tmp_path, "query", what), "touchstream run")


def test_evaluate_attribution_against_the_simulators_truth(loaded: Path) -> None:
    res = json_of(loaded, "evaluate", "attribution", "--rate", "5", "--duration", "1800", "--seed", "4", "--json",
                  "-q")
    assert res["totals_exact"] is True and set(res["models"]) == set(MODELS)
    assert res["run"]["events"] > 0 and res["deals"] == res["deals_attributed"] + len(res["deals_missing"])
    # the files of the loaded run give the same kind of report
    files = json_of(loaded, "evaluate", "attribution", "--truth", str(loaded / "truth.json"), "--credits",
                    str(loaded / "out" / "attribution.jsonl"), "--json")
    assert files["totals_exact"] is True and files["deals"] > 0
    assert all(0 <= m["credit_accuracy"] <= 1 for m in files["models"].values())
    text = touchstream(loaded, "evaluate", "attribution", "--truth", str(loaded / "truth.json"), "--credits",
                       str(loaded / "out" / "attribution.jsonl"))
    assert "exact_deals" in text.stdout and "credit_accuracy" in text.stdout
    assert_one_line(touchstream(loaded, "evaluate", "attribution", "--truth", str(loaded / "truth.json")),
                    "--credits")


def test_evaluate_nab_and_the_funnel_default(tmp_path: Path) -> None:
    values = [10.0 + (i % 7) for i in range(600)]
    values[400] = 200.0
    _write(tmp_path / "nab", "ads/spike.csv", values, 5, [(380, 420)])
    res = json_of(tmp_path, "evaluate", "nab", "--root", str(tmp_path / "nab"), "--categories", "ads", "--json")
    assert set(res["profiles"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert [f["file"] for f in res["files"]] == ["ads/spike.csv"]
    text = touchstream(tmp_path, "evaluate", "nab", "--root", str(tmp_path / "nab"), "--categories", "ads",
                       "--out", str(tmp_path / "nab.json"))
    assert text.returncode == 0 and "reward_low_FN_rate" in text.stdout, text.stderr
    assert orjson.loads((tmp_path / "nab.json").read_bytes())["files"]
    assert_one_line(touchstream(tmp_path, "evaluate", "nab", "--root", str(tmp_path / "nowhere")), "no NAB corpus")
    # without a subcommand it is still the funnel incident evaluation
    assert_one_line(touchstream(tmp_path, "evaluate"), "--truth", "--anomalies")
