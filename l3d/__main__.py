"""`python -m l3d ...`: the command line (l3d.cli)."""
from .cli import main

main()
