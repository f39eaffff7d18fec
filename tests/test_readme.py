"""The README's two commands are the ones CI and newcomers run."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    parts = text.split("```bash\n")[1:]
    return [p.split("```", 1)[0].strip() for p in parts]


def test_readme_opens_with_run_and_test_commands():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    run_cmd, test_cmd = blocks[0], blocks[1]
    assert "python -m lcab.run" in run_cmd and "pip install" in run_cmd
    assert "pytest" in test_cmd and "pip install" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text()
    # CI installs the same way and runs the same test command.
    install, test = (s.strip() for s in test_cmd.split("&&"))
    assert "-c .ci/constraints.txt" in install and '-e ".[test]"' in install
    assert test in ci.splitlines()
