"""dpocheck."""
