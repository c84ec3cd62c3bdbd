"""Attribution against the simulator's ground truth: did the pipeline credit the right touches?

The simulator knows which person every event belongs to (``simulate.truth(cfg)["attribution"]``:
each won deal with its person's touch-type events, in the order they were emitted). The credits
each model *should* give follow from those events with the core's own rules (touch folding,
look-back, the five models: :mod:`streams.core.attribution`); what the pipeline emitted
(``attribution.jsonl`` of ``touchstream process``, or the topic) had to find the same person
through the identity graph, across devices and channels, with merges arriving late. So a
mismatch measures identity stitching and revision handling, not model arithmetic (the unit
tests pin that).

The pipeline's credit for a (deal, model, touch) is the sum of every record emitted for it
(revisions retract what they replace), i.e. its final attribution. Reported per model:

* ``exact_deals``: deals whose credits equal the truth's touch by touch, to the cent;
* ``credit_accuracy``: the share of revenue credited to the right touch (sum over deals and
  touches of min(pipeline, truth), over the revenue): 1.0 = perfect;
* per campaign: attributed revenue, pipeline and truth.

And independent of the touch rules: for deals whose person the simulator started from a
campaign during the run (not in the warm-up, whose events are not emitted), how often
``first_touch`` names that campaign (``acquisition``); and whether every
deal's credits add up to its value in every model and revision (``totals_exact``).

Pure: truth and records in, a JSON-able report out (``touchstream evaluate`` wires it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from streams.core.attribution import MODELS, AttributionConfig, add_touch, split, touches_for
from streams.core.money import to_minor

Key = tuple[str, str]  # (tenant, deal id)


def expected_credits(truth: Mapping[str, Any], config: AttributionConfig | None = None) -> dict[Key, dict[str, Any]]:
    """(tenant, deal) → value, currency and per model {touch event id (None: no touch): minor units}."""
    cfg = config or AttributionConfig()
    start = truth.get("config", {}).get("start_ms", 0)
    out: dict[Key, dict[str, Any]] = {}
    for deal in truth["attribution"]["deals"]:
        value = to_minor(deal["amount"], deal["currency"])
        if not value:
            continue
        touches: list[list[Any]] = []
        for at, event_id, channel, campaign, etype in deal["touches"]:
            if etype in cfg.touch_types:
                add_touch(touches, at, channel, campaign, event_id, cfg.visit_gap_ms)
        used = touches_for(touches, deal["deal_at"], cfg.lookback_ms)
        by_model: dict[str, dict[str | None, int]] = {}
        campaigns: dict[str | None, str | None] = {x[3]: x[2] for x in used}
        for model in MODELS:
            if not used:
                by_model[model] = {None: value}
                continue
            parts = split(value, model, [x[0] for x in used], deal["deal_at"], cfg)
            by_model[model] = {x[3]: p for x, p in zip(used, parts, strict=True) if p}
        out[(deal["tenant_id"], deal["deal_id"])] = {
            "value_minor": value, "currency": deal["currency"], "by_model": by_model, "campaign_of": campaigns,
            "acquisition": deal.get("acquisition") if deal.get("arrived_at", 0) >= start else None,
            "touch_count": len(used),
        }
    return out


def emitted_credits(records: Iterable[Mapping[str, Any]]) -> tuple[dict[Key, dict[str, Any]], list[str]]:
    """Sum of every record per (deal, model, touch), and the problems found on the way (a
    revision or model whose credits do not add up to the deal value)."""
    out: dict[Key, dict[str, Any]] = {}
    totals: dict[tuple[str, str, int, str, str], int] = defaultdict(int)
    values: dict[tuple[str, str, int, str], int] = {}
    for r in records:
        key = (r["tenant_id"], r["deal_id"])
        deal = out.setdefault(key, {"by_model": {m: defaultdict(int) for m in MODELS}, "campaign_of": {},
                                    "revision": 0})
        deal["by_model"][r["model"]][r["touch_event_id"]] += r["credit_minor"]
        deal["campaign_of"][r["touch_event_id"]] = r["campaign"]
        deal["revision"] = max(deal["revision"], r["revision"])
        deal["value_minor"] = r["deal_value_minor"] if r["kind"] == "credit" else deal.get("value_minor", 0)
        totals[(*key, r["revision"], r["kind"], r["model"])] += r["credit_minor"]
        values[(*key, r["revision"], r["kind"])] = r["deal_value_minor"]
    problems = [
        f"{tenant}/{deal} revision {rev} {kind} {model}: credits sum to {total}, value {value}"
        for (tenant, deal, rev, kind, model), total in sorted(totals.items())
        if total != (1 if kind == "credit" else -1) * (value := values[(tenant, deal, rev, kind)])
    ]
    for deal in out.values():
        deal["by_model"] = {m: {k: v for k, v in c.items() if v} for m, c in deal["by_model"].items()}
    return out, problems


def evaluate(
    truth: Mapping[str, Any], records: Iterable[Mapping[str, Any]], config: AttributionConfig | None = None
) -> dict[str, Any]:
    want = expected_credits(truth, config)
    got, problems = emitted_credits(records)
    missing = sorted(f"{t}/{d}" for t, d in set(want) - set(got))
    unexpected = sorted(f"{t}/{d}" for t, d in set(got) - set(want))
    common = sorted(set(want) & set(got))
    revenue = sum(want[k]["value_minor"] for k in common)
    models: dict[str, Any] = {}
    campaigns: dict[str, list[dict[str, Any]]] = {}
    for model in MODELS:
        exact = 0
        right = 0
        by_campaign: dict[tuple[str, str | None], list[int]] = defaultdict(lambda: [0, 0])
        for key in common:
            w, g = want[key]["by_model"][model], got[key]["by_model"][model]
            exact += w == g
            right += sum(min(v, g.get(touch, 0)) for touch, v in w.items())
            for touch, v in w.items():
                by_campaign[(key[0], want[key]["campaign_of"].get(touch))][0] += v
            for touch, v in g.items():
                by_campaign[(key[0], got[key]["campaign_of"].get(touch))][1] += v
        models[model] = {
            "exact_deals": exact,
            "exact_share": exact / len(common) if common else None,
            "credit_accuracy": right / revenue if revenue else None,
        }
        campaigns[model] = [
            {"tenant_id": t, "campaign": c, "truth_minor": tv, "pipeline_minor": pv}
            for (t, c), (tv, pv) in sorted(by_campaign.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
        ]
    known = [k for k in common if (want[k]["acquisition"] or {}).get("campaign")]
    first_ok = 0
    for key in known:
        credited = got[key]["by_model"]["first_touch"]
        names = {got[key]["campaign_of"].get(touch) for touch in credited}
        first_ok += names == {want[key]["acquisition"]["campaign"]}
    return {
        "deals": len(want),
        "deals_attributed": len(common),
        "deals_missing": missing,
        "deals_unexpected": unexpected,
        "deals_revised": sum(1 for k in common if got[k]["revision"] > 1),
        "revenue_minor": revenue,
        "totals_exact": not problems,
        "total_problems": problems[:20],
        "models": models,
        "campaigns": campaigns,
        "acquisition": {
            "deals_with_campaign": len(known),
            "first_touch_names_it": first_ok,
            "share": first_ok / len(known) if known else None,
        },
    }
