"""Admission control: which rule applies, how requests are counted, where the state lives."""
