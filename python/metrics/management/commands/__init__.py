"""The commands themselves, one module each."""
