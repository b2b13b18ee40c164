"""`python -m l3d.report.dashboard RUN_DIR` (see `cli.main`)."""
from .cli import main

if __name__ == "__main__":
    main()
