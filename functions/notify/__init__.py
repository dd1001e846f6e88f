"""The notify function: face.identified events matching a filter in, webhook POSTs out."""
