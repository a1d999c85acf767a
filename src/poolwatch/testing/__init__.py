"""Testing helpers: the pytest plugin, the downstream test server and the scenario hunt."""
