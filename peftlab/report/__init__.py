"""Owns the tables, plots, verdict and HTML page made from results records (never torch, never training code).
May import only atomic and errors: a figure it needs from compare (or any recipe) travels in the records it is given."""
