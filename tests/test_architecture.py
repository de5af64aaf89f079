"""The arrows between the packages: import-linter's contracts (pyproject.toml) hold, a wrong import breaks
them, and the package-level arrows stay inside the design (docs/architecture.md).

``python -m tests.test_architecture`` (or ``make arrows``) prints the arrows between the top-level packages.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent
PACKAGES = ("controlplane", "flags", "monitoring", "alerting", "deployments", "backups")
# controlplane holds the ground and the composition root: its root modules count apart, as "root".
ROOT_MODULES = ("settings", "urls", "celery", "wsgi", "asgi")

# What each part may import besides itself (shared/ARCHITECTURE.md).
ALLOWED = {
    "root": set(PACKAGES) - {"controlplane"},
    "controlplane": set(),
    "flags": {"controlplane"},
    "monitoring": {"controlplane", "flags", "backups", "alerting"},
    "alerting": {"controlplane", "flags", "backups", "monitoring"},
    "backups": {"controlplane", "flags"},
    "deployments": {"controlplane", "flags", "monitoring", "alerting", "backups"},
}


def _imported(tree: ast.AST) -> set[str]:
    """Top-level names of the absolute imports in ``tree``, those inside functions included."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def arrows(base: Path = BASE_DIR) -> dict[str, set[str]]:
    """part -> the other packages of ours it imports, read with ast from every .py file under it; the
    parts are the five packages, controlplane without its composition-root modules, which are "root"."""
    found: dict[str, set[str]] = {"root": set(), **{package: set() for package in PACKAGES}}
    for package in PACKAGES:
        for path in sorted((base / package).rglob("*.py")):
            root = package == "controlplane" and path.parent == base / package and path.stem in ROOT_MODULES
            found["root" if root else package] |= _imported(ast.parse(path.read_text(), filename=str(path)))
    own = {"root": "controlplane"}
    return {part: (targets & set(PACKAGES)) - {own.get(part, part)} for part, targets in found.items()}


def lint_imports(cwd: Path = BASE_DIR) -> subprocess.CompletedProcess:
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert command, "lint-imports is not installed (pip install -r requirements-dev.txt)"
    return subprocess.run([command, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_the_contracts_hold():
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_arrows_between_packages_stay_inside_the_design():
    found = arrows()
    assert {part: targets - ALLOWED[part] for part, targets in found.items()} == {part: set() for part in ALLOWED}
    assert [part for part, targets in found.items() if "deployments" in targets] == ["root"]


# (file, the import added to it, the contract that must break)
WRONG_ARROWS = [
    ("controlplane/audit.py", "from flags import models", "The ground imports no app"),
    ("controlplane/pages.py", "import deployments.selectors", "Nothing but the composition root imports deployments"),
    ("flags/services.py", "from backups.selectors import all_readiness", "flags imports only the ground"),
    ("backups/services.py", "from alerting.tasks import evaluate_alert_rules", "backups imports neither"),
    ("backups/api.py", "from flags.models import Flag", "backups imports neither"),
    ("monitoring/views.py", "from deployments.selectors import latest_deployments", "monitoring does not import"),
    ("monitoring/dashboard.py", "from backups.models import BackupTarget", "monitoring reads flags and backups only"),
    ("monitoring/services.py", "from alerting.services import alert_rules_evaluate", "monitoring reads alerting only"),
    ("monitoring/dashboard.py", "from alerting.models import Alert", "monitoring reads alerting only"),
    ("alerting/services.py", "from backups.models import BackupTarget", "alerting does not import deployments"),
    ("alerting/services.py", "from monitoring.models import HealthMetric", "alerting does not import deployments"),
    ("alerting/tasks.py", "from deployments.services import log", "alerting does not import deployments"),
    ("flags/services.py", "from alerting.selectors import open_alerts", "flags imports only the ground"),
    ("backups/services.py", "from alerting.selectors import open_alerts", "Only the composition root, deployments and"),
    ("backups/engines/errors.py", "from backups.engines.sources import Database", "backups.engines: each module"),
    ("backups/engines/sqlite.py", "from backups.engines.schema import pg_schema", "backups.engines: each module"),
    ("backups/engines/files.py", "from backups.engines.tools import pg_tool", "backups.engines: each module"),
]


@pytest.mark.parametrize(("path", "line", "contract"), WRONG_ARROWS, ids=[f"{p}: {i}" for p, i, _ in WRONG_ARROWS])
def test_a_wrong_arrow_breaks_its_contract(tmp_path, path, line, contract):
    """A copy of the tree with one forbidden import added: lint-imports fails and names the contract."""
    for package in PACKAGES:
        shutil.copytree(BASE_DIR / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(BASE_DIR / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / path
    target.write_text(target.read_text() + f"\n{line}\n")
    result = lint_imports(cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert " ".join(contract.split()) in " ".join(broken.split()), result.stdout


if __name__ == "__main__":
    names = {
        "root": "composition root (controlplane." + ", .".join(ROOT_MODULES) + ")",
        "controlplane": "ground (controlplane)",
    }
    for part, targets in arrows().items():
        print(f"{names.get(part, part)} -> {' '.join(sorted(targets)) or '(nothing)'}")  # noqa: T201
