"""The README's 个人信息保护 section (what a bureau shows its auditors) stays true to the declarations: every
table with personal data is in its table with the retention and erasure the code applies (example config)."""

from __future__ import annotations

from bot.commands.privacy import tables_rows
from tests.conftest import ROOT, make_config


def _section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## 个人信息保护")
    return text[start:text.index("\n## ", start + 5)]


def test_readme_lists_every_table_with_its_retention_and_erasure() -> None:
    section = _section()
    for r in tables_rows(make_config("sqlite+aiosqlite:///unused.db")):
        if not r["personal_data"]:
            assert f"`{r['table']}`" in section, f"README: say that {r['table']} holds no personal data"
            continue
        line = next((ln for ln in section.splitlines() if ln.startswith(f"| `{r['table']}` |")), None)
        assert line is not None, f"README 个人信息保护 table has no row for {r['table']}"
        assert f"| {r['retention']} |" in line, f"{r['table']}: README says {line!r}, code keeps it {r['retention']!r}"
        assert line.endswith(f"| {r['on_erase']} |"), f"{r['table']}: erasure is {r['on_erase']!r}"
