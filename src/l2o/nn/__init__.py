"""Modules and losses: the h-detach LSTM and explicit gradient regularization."""

from l2o.nn.grad_reg import GradientRegularizer, RegularizedTask, gradient_flow, gradient_norm_squared
from l2o.nn.hdetach import HDetachLSTM, lstm_forward, lstm_layer

__all__ = ["GradientRegularizer", "RegularizedTask", "gradient_flow", "gradient_norm_squared", "HDetachLSTM", "lstm_forward",
           "lstm_layer"]
