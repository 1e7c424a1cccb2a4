"""A local cluster of real upstream Kubernetes components (and MinIO) for tests and `make dev-cluster`."""
