"""likex: inject a designed preference into a language model with a KL loss, measure it
honestly, and detect it."""

__version__ = "0.1.0"
