"""``python -m costdb.cli``: the same as the ``costdb`` console script."""
from costdb.cli import main

main()
