"""Placeholder (issue 18): replaced by its owner."""
