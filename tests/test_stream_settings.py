"""The ``detection.streams`` settings: SPEC defaults, and one-line errors naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from notifier.config import Settings, settings_from_text
from notifier.detect.settings import AudienceSettings
from notifier.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

MINIMAL = """
clusters:
  - name: eu-1
    base_url: https://storm.example.com/
    auth:
      token: tok-s3cr3t
"""


def load(text: str, env: dict[str, str] | None = None) -> Settings:
    return settings_from_text(text, env or {}, source="test.yaml")


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(text, env)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_defaults_are_those_of_the_spec() -> None:
    """Without a streams block, detection.streams holds SPEC section 2's values."""
    streams = load(MINIMAL).detection.streams
    assert streams == AudienceSettings()
    assert streams.enabled is True
    assert streams.harness_types == (
        "STORM_MSE_VIEWER",
        "STORM_HLS_VIEWER",
        "GENERIC_HLS_VIEWER",
        "GENERIC_DASH_VIEWER",
        "RTMP_VIEWER",
    )
    assert streams.audience_thresholds == (100, 1000, 10000)
    assert streams.audience_hysteresis == 0.1
    assert (streams.degraded_share, streams.degraded_min_viewers) == (0.2, 3)
    assert streams.recovered_share == 0.1


def test_every_key_has_a_description() -> None:
    """Each key says what it does (the configuration reference is generated from them)."""
    assert all(field.description for field in AudienceSettings.model_fields.values())


def test_a_full_block_and_the_edges_of_the_ranges_load() -> None:
    """No thresholds, hysteresis 0, equal shares of 0 or 1 and one harness type are valid."""
    text = MINIMAL + (
        "detection:\n"
        "  streams:\n"
        "    enabled: false\n"
        "    harness_types: [RTMP_VIEWER]\n"
        "    audience_thresholds: []\n"
        "    audience_hysteresis: 0\n"
        "    degraded_share: 1\n"
        "    degraded_min_viewers: 1\n"
        "    recovered_share: 1\n"
    )
    streams = load(text).detection.streams
    assert (streams.enabled, streams.harness_types, streams.audience_thresholds) == (
        False,
        ("RTMP_VIEWER",),
        (),
    )
    assert (streams.degraded_share, streams.recovered_share) == (1, 1)
    zero = load(MINIMAL + "detection: {streams: {degraded_share: 0, recovered_share: 0}}\n")
    assert zero.detection.streams.recovered_share == 0


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            "audience_thresholds: [100, 100]",
            "detection.streams.audience_thresholds: must be strictly increasing",
        ),
        (
            "audience_thresholds: [1000, 100]",
            "detection.streams.audience_thresholds: must be strictly increasing",
        ),
        (
            "audience_thresholds: [0, 100]",
            "detection.streams.audience_thresholds[0]: input should be greater than 0",
        ),
        (
            "audience_thresholds: [10, -5]",
            "detection.streams.audience_thresholds[1]: input should be greater than 0",
        ),
        ("audience_thresholds: [1.5]", "detection.streams.audience_thresholds[0]: input should"),
        (
            "audience_hysteresis: 1",
            "detection.streams.audience_hysteresis: input should be less than 1",
        ),
        (
            "audience_hysteresis: -0.1",
            "detection.streams.audience_hysteresis: input should be greater than or equal to 0",
        ),
        (
            "degraded_share: 1.5",
            "detection.streams.degraded_share: input should be less than or equal to 1",
        ),
        (
            "degraded_share: -0.2",
            "detection.streams.degraded_share: input should be greater than or equal to 0",
        ),
        (
            "recovered_share: 2",
            "detection.streams.recovered_share: input should be less than or equal to 1",
        ),
        (
            "recovered_share: 0.3",
            "detection.streams.recovered_share: must be at most degraded_share",
        ),
        (
            "degraded_min_viewers: 0",
            "detection.streams.degraded_min_viewers: input should be greater than or equal to 1",
        ),
        ("harness_types: [WEB_VIEWER]", "detection.streams.harness_types[0]: input should be"),
        ("harness_types: []", "detection.streams.harness_types: tuple should have at least 1"),
        ("enabled: maybe", "detection.streams.enabled: input should be a valid boolean"),
        ("thresholds: [1]", "detection.streams.thresholds: unknown key"),
    ],
)
def test_each_invalid_value_is_one_line_naming_the_key(block: str, expected: str) -> None:
    """A bad streams value names the file and its full key, on one line."""
    message = error_of(MINIMAL + f"detection: {{streams: {{{block}}}}}\n")
    assert message.startswith("test.yaml: detection.streams.")
    assert expected in message


def test_a_bad_share_alone_is_reported_once() -> None:
    """An out-of-range degraded_share is not also reported as above recovered_share."""
    message = error_of(MINIMAL + "detection: {streams: {degraded_share: 2}}\n")
    assert message == (
        "test.yaml: detection.streams.degraded_share: input should be less than or equal to 1"
    )


def test_environment_overrides_reach_the_block_and_are_named_in_errors() -> None:
    """NOTIFIER_DETECTION__STREAMS__* sets keys; a bad one names the variable."""
    env = {"NOTIFIER_DETECTION__STREAMS__AUDIENCE_THRESHOLDS": "[5, 50]"}
    assert load(MINIMAL, env).detection.streams.audience_thresholds == (5, 50)
    env = {"NOTIFIER_DETECTION__STREAMS__AUDIENCE_THRESHOLDS": "[50, 5]"}
    message = error_of(MINIMAL, env)
    assert "detection.streams.audience_thresholds: must be strictly increasing" in message
    assert message.startswith("NOTIFIER_DETECTION__STREAMS__AUDIENCE_THRESHOLDS: ")


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    return subprocess.run(
        [sys.executable, "-m", "notifier", "check-config", "--offline", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.timeout(120)
def test_check_config_exits_2_with_one_line_naming_the_key(tmp_path: Path) -> None:
    """`notifier check-config` on a bad streams block: exit 2, one line on stderr, no output."""
    config = tmp_path / "notifier.yaml"
    config.write_text(
        MINIMAL + "detection:\n  streams:\n    degraded_share: 0.1\n    recovered_share: 0.2\n"
    )
    result = _check_config(config)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"notifier: {config}: detection.streams.recovered_share: must be at most degraded_share\n"
    )
    config.write_text(MINIMAL + "detection: {streams: {audience_thresholds: [10, 20]}}\n")
    valid = _check_config(config)
    assert valid.returncode == 0, valid.stderr
    assert "audience_thresholds:\n    - 10\n    - 20\n" in valid.stdout
