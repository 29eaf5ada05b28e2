"""The docs tell the truth about the command line: every flag in the reference, a README a newcomer can read."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_reference_lists_every_flag_as_the_command_line_declares_it():
    check = subprocess.run([sys.executable, str(ROOT / "docs" / "flags.py"), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_the_readme_is_a_short_manual_with_one_section_per_command():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) <= 15 * 1024
    for command in ("train", "sample", "eval", "calibrate", "sweep-tau", "explore", "bench"):
        assert f"### `cdt {command}`" in text
    assert 'pip install torch==2.13.0 && pip install -e ".[dev]" && cdt train' in text
    assert "python -m pytest -q" in text


def test_links_between_the_docs_lead_somewhere():
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name} links to {target}"
