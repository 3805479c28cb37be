"""sst_tf: deep metric learning in TensorFlow / Keras 3.

Implements the stochastic symmetric triplet (SST) loss and local sampling of
Nguyen & De Baets (Neurocomputing 2020) and the baselines around them.
"""

__version__ = "0.1.0"
