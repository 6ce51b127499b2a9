"""Small adapters that let trainers load sftdata exports through their own extension points."""
