"""Users of the example site: a custom user model, login and logout."""
