"""Rule files from TOUCHSTREAM_RULES_DIR: parsed at start-up, one line naming file and line on a
mistake (a marketer's typo must stop the worker, not surface later as wrong tags)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.app.worker import ConfigError, pipeline_config, profile_config
from streams.core.profiles import ProfileConfig
from streams.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "rules"


def test_the_shipped_example_parses_and_serves_its_tenant() -> None:
    cfg = profile_config(str(EXAMPLE))
    assert set(cfg.rules) == {"acme-shop"}
    assert {r.tag for r in cfg.rules["acme-shop"].tag_rules} >= {"hot", "chatty", "big_deal"}
    assert cfg.default_rules is ProfileConfig().default_rules


def test_default_rules_replace_the_built_in_ones_for_other_tenants(tmp_path: Path) -> None:
    (tmp_path / "default.rules").write_text("tag everyone when events >= 1\n")
    (tmp_path / "notes.txt").write_text("not a rule file")
    cfg = profile_config(str(tmp_path))
    assert cfg.rules == {}
    assert [r.tag for r in cfg.default_rules.tag_rules] == ["everyone"]


def test_a_mistake_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "globex-travel.rules"
    bad.write_text("# fine\ntag x when channel fax\n")
    with pytest.raises(ConfigError) as err:
        pipeline_config(Settings.from_env({"TOUCHSTREAM_RULES_DIR": str(tmp_path)}))
    assert str(bad) in str(err.value) and ":2" in str(err.value) and "fax" in str(err.value)


def test_a_missing_directory_and_a_bad_look_back_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        profile_config(str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="TOUCHSTREAM_ATTRIBUTION_LOOKBACK_DAYS"):
        pipeline_config(Settings.from_env({"TOUCHSTREAM_ATTRIBUTION_LOOKBACK_DAYS": "0"}))
    cfg = pipeline_config(Settings.from_env({"TOUCHSTREAM_ATTRIBUTION_LOOKBACK_DAYS": "30"}))
    assert cfg.attribution.lookback_ms == 30 * 86_400_000
