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


def test_env_example_copied_to_dotenv_starts_on_the_defaults(tmp_path):
    """``cp .env.example .env`` as its first line says: every empty value means the default."""
    import json
    import subprocess

    from tests.conftest import manage, subprocess_env

    values = {name: line.split("=", 1)[1] for name, line in documented().items()}
    values["CONTROLPLANE_VAR_DIR"] = str(tmp_path / "var")
    values["BACKUP_DIR"] = str(tmp_path / "var" / "backups")
    values["BACKUP_TMP_DIR"] = str(tmp_path / "var" / "backups" / ".partial")
    env = subprocess_env(DJANGO_SETTINGS_MODULE="controlplane.settings", **values)
    assert env["LOG_FORMAT"] == "" and env["SENTRY_ENVIRONMENT"] == ""  # as the file lists them
    script = (
        "import json; from django.conf import settings as s; print(json.dumps([s.LOG_FORMAT, s.SENTRY_ENVIRONMENT, "
        "s.PROMETHEUS_MULTIPROC_DIR, s.DEBUG, s.DATABASES['default']['ENGINE']]))"
    )
    result = subprocess.run(
        manage("shell", "-c", script), env=env, cwd=BASE_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    log_format, sentry_environment, prometheus_dir, debug, engine = json.loads(result.stdout.strip().splitlines()[-1])
    assert log_format == "text" and sentry_environment == "development"
    assert prometheus_dir == str(tmp_path / "var" / "prometheus")
    assert debug is False and engine.endswith("sqlite3")
