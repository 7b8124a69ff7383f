"""`python -m pipeline` is the same as the `medgrid` console script."""

from pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
