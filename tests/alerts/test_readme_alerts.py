"""The README's alert section runs: its rule test passes and its TOML example validates."""

from __future__ import annotations

import runpy
from pathlib import Path

from poolwatch._config import load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "tests" / "examples" / "alert_rules.py"


def test_readme_quotes_the_rule_test_example_and_it_passes() -> None:
    """The RuleTest example is in the README verbatim and its assertions hold."""
    assert EXAMPLE.read_text() in (ROOT / "README.md").read_text()
    runpy.run_path(str(EXAMPLE))


def test_readme_toml_example_is_a_valid_config(tmp_path: Path) -> None:
    """The poolwatch.toml shown in the README loads without error and means what it says."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```toml\n# poolwatch.toml") + len("```toml\n")
    block = readme[start : readme.index("```", start)]
    (tmp_path / "poolwatch.toml").write_text(block)
    cfg = load_config(cwd=tmp_path, env={"POOLWATCH_SMTP_PASSWORD": "x"})
    assert cfg.smtp is not None
    assert (cfg.smtp.port, cfg.smtp.security) == (587, "starttls")
    assert cfg.rules.utilisation_warning == 0.75
    assert cfg.rules.leak_age == 60.0
    assert cfg.webhook is not None
    assert cfg.webhook.format == "slack"
    assert cfg.heartbeat is not None
    assert cfg.heartbeat.interval == 60.0
