"""Where the repository and its example district are."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE_SITE = ROOT / "site.example.toml"
