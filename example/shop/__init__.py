"""The example shop: a few views of every kind the middleware must handle."""
