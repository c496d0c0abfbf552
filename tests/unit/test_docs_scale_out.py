"""docs/scale-out.md shows tests/kamailio-dispatcher.cfg whole: the configuration the
integration test runs (tests/integration/test_scale_out.py) is the one the page documents."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "kamailio-dispatcher.cfg"
DOC = ROOT / "docs" / "scale-out.md"


def test_the_documented_kamailio_config_is_the_tested_one() -> None:
    match = re.search(
        r"<!-- BEGIN tests/kamailio-dispatcher.cfg -->\n```\n(.*?)```\n"
        r"<!-- END tests/kamailio-dispatcher.cfg -->",
        DOC.read_text(),
        re.S,
    )
    assert match is not None, "docs/scale-out.md lost its BEGIN/END block of the config"
    assert match.group(1) == CONFIG.read_text()


def test_readme_points_at_the_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "### Running many" in readme and "docs/scale-out.md" in readme
