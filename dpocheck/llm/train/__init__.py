"""Preference training on TRL with dpocheck's losses, tokenisation and U metrics (C3, C4, C8, C10)."""
