"""Configuration read from files: suites (suite.yaml) and the documents' figures (baselines.yaml)."""
