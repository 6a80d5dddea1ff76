"""Compatibility: the LSTM moved to the package `lstm_mt.lstm`; old imports keep working."""

from lstm_mt.lstm import GATE_NAMES, LSTM, GateActivations, GateRecord, GateRecorder, LSTMCell, lstm_step

__all__ = ["GATE_NAMES", "LSTM", "GateActivations", "GateRecord", "GateRecorder", "LSTMCell", "lstm_step"]
