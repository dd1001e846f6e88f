"""The retrain function: starts training runs and promotes their models."""
