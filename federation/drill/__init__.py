"""Failure drills: scripted faults against a local federation, measured and reported."""
