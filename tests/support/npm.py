"""The tests' npm tools (tests/npm/package.json: OpenAPI linters, a TypeScript client's)."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def npm_tools() -> Path:
    """The tests' npm tools (tests/npm), installed once per machine by scripts/setup-npm.sh."""
    done = subprocess.run(
        [ROOT / "scripts" / "setup-npm.sh"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1]) / "node_modules" / ".bin"
