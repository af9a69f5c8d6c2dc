"""``python -m scalable`` runs the CLI."""

from scalable.cli import main

main()
