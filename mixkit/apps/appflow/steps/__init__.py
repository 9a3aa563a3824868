"""The steps AppFlow apps are made of, one module per kind of model (each imports its libraries itself)."""
