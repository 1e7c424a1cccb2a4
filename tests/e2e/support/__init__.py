"""Shared helpers of the e2e tests: the `Cluster` facade, its local and kind backends, fixtures."""
