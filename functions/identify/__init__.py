"""The identify function: queries bucket events in, results and face.identified out."""
