"""Shipped YAML presets (installed as the package `cdt.configs`)."""
