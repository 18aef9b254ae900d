"""Modules and losses: the h-detach LSTM and explicit gradient regularization."""

from l2o.nn.hdetach import HDetachLSTM, lstm_forward, lstm_layer

__all__ = ["HDetachLSTM", "lstm_forward", "lstm_layer"]
