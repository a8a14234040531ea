"""Project rules that must hold: README and .ci/run in step; import layers
(DESIGN.md section 2); headless never imports textual, and hmmlearn is not
imported at start."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_line_verbatim():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    ci_lines = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.startswith("#")
                and not ln.startswith(("set ", "cd "))]
    test_lines = [ln.strip() for ln in readme.splitlines() if "pytest" in ln and "pip install" in ln]
    assert test_lines, "README has no install-and-test line"
    assert ci_lines == [test_lines[0]]


FORBIDDEN = {
    "core": {"textual", "rich", "ccxt", "ib_async", "hmmlearn", "httpx", "desk", "venues", "models", "themes"},
    "venues": {"desk", "models", "textual", "themes"},
    "models": {"desk", "venues", "textual", "themes"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_import_layers():
    bad = []
    for pkg, forbidden in FORBIDDEN.items():
        for f in (ROOT / pkg).rglob("*.py"):
            hit = _imports(f) & forbidden
            if hit:
                bad.append(f"{f.relative_to(ROOT)} imports {sorted(hit)}")
    assert not bad, bad


def test_headless_modules_do_not_import_textual_or_hmmlearn_at_start():
    code = (
        "import sys, desk.cli, desk.wiring, desk.daemon, desk.config, desk.client, desk.api, desk.metrics, "
        "desk.alerts, desk.telegram, desk.export, core.engine, core.lifecycle, core.policy_runtime, venues.paper, "
        "venues.feeds, models.hmm, models.ensemble, models.executor;"
        "print(sorted(m for m in ('textual','hmmlearn','ccxt','sklearn','ib_async') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
