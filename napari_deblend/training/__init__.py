"""Training and evaluation of neural deblenders: datasets, training loops, metrics and plots."""
