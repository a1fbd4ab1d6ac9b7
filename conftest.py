# Loads the harness's pytest plugin: every suites/<model>/suite.yaml becomes
# one test item per stage x target x batch size.
pytest_plugins = ["harness.plugin"]
