"""Examples of your own model classes, served with ``MODEL=examples.<module>:<Class>``."""
