from __future__ import annotations

import re

from tests.conftest import BASE_DIR


def documented() -> dict[str, str]:
    lines = (BASE_DIR / ".env.example").read_text().splitlines()
    found = {}
    for index, line in enumerate(lines):
        match = re.match(r"^([A-Z_][A-Z0-9_]*)=", line)
        if match:
            assert index > 0 and lines[index - 1].startswith("#"), f"{match.group(1)} has no line of meaning"
            found[match.group(1)] = line
    return found


def test_every_variable_the_settings_and_procfile_read_is_in_env_example():
    settings_source = (BASE_DIR / "controlplane" / "settings.py").read_text()
    read = set(re.findall(r'(?:env\.\w+|_bool|_int|_list)\(\s*"([A-Z_][A-Z0-9_]*)"', settings_source))
    read |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (BASE_DIR / "Procfile").read_text()))
    assert "DATABASE_URL" in read and "PORT" in read
    missing = read - documented().keys()
    assert not missing, f"not in .env.example: {sorted(missing)}"
