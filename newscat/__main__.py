"""`python -m newscat` runs the CLI (this is what the MLproject's entry points call)."""

from newscat.cli import main

if __name__ == "__main__":
    main()
