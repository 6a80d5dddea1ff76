"""Same as `lstm-mt bench`: the explicit LSTM against torch.nn.LSTM, printed as a table."""

from lstm_mt.bench import main

if __name__ == "__main__":
    main()
