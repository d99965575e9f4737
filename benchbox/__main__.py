"""`python -m benchbox ...`: the same command as `benchbox ...` (where no console script is installed)."""

from benchbox.cli import main

if __name__ == "__main__":
    main()
