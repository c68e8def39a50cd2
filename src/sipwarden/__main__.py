"""``python -m sipwarden`` runs the command line."""

from sipwarden.cli import main

main()
