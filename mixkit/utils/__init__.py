"""The bottom layer: process groups, JSON files, environment switches, typed command-line options.

Nothing here imports torch models, datasets or any other mixkit package; every layer may import it.
"""
