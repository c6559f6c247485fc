"""The README's configuration section is the settings models' own documentation."""

from __future__ import annotations

from pathlib import Path

from runtime.settings_doc import BEGIN, END, render

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_lists_every_setting_as_the_models_define_it() -> None:
    text = README.read_text(encoding="utf-8")
    documented = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert documented == render(), "run: python -m runtime.settings_doc, paste into README.md"
