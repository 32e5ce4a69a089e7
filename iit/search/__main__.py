"""``python -m iit.search``: see `iit.search.cli`."""

from iit.search.cli import main

if __name__ == "__main__":
    main()
