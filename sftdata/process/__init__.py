"""What happens to records: ``record`` (one record through adapt, validate, render, encode) and
``chunk`` (one chunk of input through it, into shards, a quarantine part and a done-marker)."""
