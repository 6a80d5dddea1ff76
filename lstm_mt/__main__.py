"""`python -m lstm_mt` is the same as the `lstm-mt` command."""

from lstm_mt.cli import main

if __name__ == "__main__":
    main()
