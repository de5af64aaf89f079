"""import_flags and export_flags: validated whole, applied all or nothing, round trip changes nothing."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from controlplane.models import AuditEvent
from flags.models import Flag, FlagState
from tests.conftest import BASE_DIR

pytestmark = pytest.mark.django_db
FIXTURE = BASE_DIR / "flags" / "fixtures" / "wingmanmatch.json"


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def write(tmp_path, document):
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return str(path)


def test_the_shipped_file_has_the_products_14_flags():
    output = run("import_flags", str(FIXTURE))
    assert "14 created" in output
    names = set(Flag.objects.values_list("name", flat=True))
    assert len(names) == 14
    assert {"enhanced_monitoring", "external_alerts", "backup_verification", "performance_monitoring",
            "performance_alerts"} <= names  # fmt: skip


def test_export_then_import_changes_nothing(tmp_path):
    run("import_flags", str(FIXTURE))
    exported = run("export_flags")
    before = AuditEvent.objects.count()
    output = run("import_flags", write(tmp_path, exported))
    assert "0 created, 0 updated, 14 unchanged" in output
    assert AuditEvent.objects.count() == before
    assert json.loads(run("export_flags")) == json.loads(exported)


def test_dry_run_prints_and_changes_nothing(tmp_path):
    output = run("import_flags", "--dry-run", write(tmp_path, {"flags": [{"name": "chat", "enabled": True}]}))
    assert "+ chat" in output and "would apply: 1 created" in output
    assert not Flag.objects.exists()


def test_only_name_is_required_and_updates_touch_named_fields(tmp_path):
    run("import_flags", write(tmp_path, {"flags": [{"name": "chat", "enabled": True, "owner": "chat"}]}))
    run("import_flags", write(tmp_path, {"flags": [{"name": "chat", "rollout_percent": 40}]}))
    chat = Flag.objects.get(name="chat")
    assert (chat.enabled, chat.rollout_percent, chat.owner) == (True, 40, "chat")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"flags": [{"name": "ok"}, {"name": "Bad"}]}, "flag 'Bad': name"),
        ({"flags": [{"name": "ok", "rollout_percent": 200}]}, "flag 'ok': rollout_percent"),
        ({"flags": [{"name": "a"}, {"name": "a"}]}, "flag 'a': name: appears twice"),
        ({"flags": [{"name": "a", "colour": "red"}]}, "flag 'a': colour: unknown field"),
        ({"flags": [{"enabled": True}]}, "flag '#2': name: is required"),  # after the valid first entry
        ({"flags": [{"name": "a", "targeting_keys": ["x" * 257]}]}, "targeting_keys"),
        ({"flag": []}, "flags:"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_files_name_the_flag_and_field_and_apply_nothing(tmp_path, document, message):
    run("import_flags", write(tmp_path, {"flags": [{"name": "existing", "enabled": False}]}))
    bad = document
    if isinstance(document, dict) and "flags" in document:
        # A valid change first, so the test sees that it is not applied either.
        bad = {"flags": [{"name": "existing", "enabled": True}, *document["flags"]]}
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        run("import_flags", write(tmp_path, bad))
    # All or nothing: the valid first entry was not applied either.
    assert Flag.objects.get(name="existing").enabled is False
    assert list(Flag.objects.values_list("name", flat=True)) == ["existing"]


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(CommandError, match="No such file"):
        run("import_flags", str(tmp_path / "missing.json"))


def test_a_dash_reads_standard_input(monkeypatch):
    document = {"flags": [{"name": "from_stdin", "enabled": True}]}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(document)))
    assert "applied: 1 created" in run("import_flags", "-")
    assert Flag.objects.get(name="from_stdin").enabled is True


def test_if_empty_imports_only_on_first_start():
    run("import_flags", "--if-empty", str(FIXTURE))
    FlagState.objects.filter(flag__name="buddy_chat", environment__name="production").update(enabled=False)
    assert "nothing imported" in run("import_flags", "--if-empty", str(FIXTURE))
    assert Flag.objects.get(name="buddy_chat").enabled is False
