"""``python -m tuneyard.cli ...``: the same as the ``tuneyard`` command."""

from tuneyard.cli import main

main()
